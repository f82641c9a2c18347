from fractions import Fraction as F

from hypothesis import given, settings
from hypothesis import strategies as st

from stvsr_cli.io.timing import grid_length, is_variable_rate, nominal_rate, resample_to_grid


def grid(times, start, rate, count):
    return list(resample_to_grid(((t, i) for i, t in enumerate(times)), start, rate, count))


def test_constant_rate_maps_one_to_one():
    times = [F(i, 25) for i in range(10)]
    assert grid_length(times[0], times[-1], F(25)) == 10
    assert grid(times, F(0), F(25), 10) == list(range(10))


def test_variable_rate_takes_the_nearest_frame_by_time():
    # Frames at 0, 40, 120, 160, 200, 320 ms on a 25 fps (40 ms) grid of 9 points.
    times = [F(ms, 1000) for ms in (0, 40, 120, 160, 200, 320)]
    assert grid_length(times[0], times[-1], F(25)) == 9
    # grid 0 40 80 120 160 200 240 280 320: 80 is halfway 40/120 (tie -> earlier), 240 nearer 200, 280 nearer 320
    assert grid(times, F(0), F(25), 9) == [0, 1, 1, 2, 3, 4, 4, 5, 5]


def test_missing_tail_holds_the_last_frame_and_repeats_are_skipped():
    times = [F(0), F(1, 25), F(1, 25), F(2, 25)]
    assert grid(times, F(0), F(25), 5) == [0, 1, 3, 3, 3]


def test_grid_can_start_after_zero():
    times = [F(10) + F(i, 24) for i in range(4)]
    assert grid(times, F(10), F(24), 4) == [0, 1, 2, 3]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 60),
    st.sampled_from([F(24000, 1001), F(25), F(30000, 1001), F(60)]),
    st.lists(st.integers(-40, 40), min_size=60, max_size=60),
)
def test_jittered_constant_rate_still_maps_one_to_one(n, rate, jitter_percent):
    # Timestamps rounded by a coarse time base wander by less than half a frame.
    jitter = [F(j, 100) for j in jitter_percent]
    times = [(i + jitter[i]) / rate for i in range(n)]
    times[0] = F(0)
    assert grid_length(times[0], times[-1], rate) == n
    assert grid(times, F(0), rate, n) == list(range(n))
    assert not is_variable_rate(times, rate) or max(abs(j) for j in jitter[:n]) > F(1, 4)


def test_coarse_time_base_rates_snap_to_the_standard_rate():
    assert nominal_rate(F(7001, 146)) == F(48000, 1001)  # what Matroska's 1 ms ticks give for 47.952
    assert nominal_rate(F(24000, 1001)) == F(24000, 1001)
    assert nominal_rate(F(2997, 100)) == F(30000, 1001)  # the usual rounding of NTSC's rate
    assert nominal_rate(F(2994, 100)) == F(2994, 100)  # 0.1 % away from any standard rate: kept
    assert nominal_rate(F(123457, 1000)) == F(123457, 1000)


def test_timestamps_are_exact_and_compact():
    import numpy as np

    from stvsr_cli.io.timing import Timestamps

    times = Timestamps(np.array([0, 1001, 2002, 3003]), F(1, 30000), origin=F(1, 2))
    assert len(times) == 4 and times[0] == F(1, 2) and times[-1] == F(1, 2) + F(3003, 30000)
    assert list(times) == [F(1, 2) + F(1001 * i, 30000) for i in range(4)]
    piece = times.between(F(1, 2) + F(1001, 30000), F(1, 2) + F(3003, 30000))  # [low, high)
    assert list(piece.ticks) == [1001, 2002]
    assert list(times.between(None, F(1, 2) + F(1, 30000)).ticks) == [0]
    assert times.ticks.nbytes == 8 * len(times)
