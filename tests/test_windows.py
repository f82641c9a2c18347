import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stvsr_cli.pipeline.windows import plan_windows, window_starts


@st.composite
def plans(draw):
    window = draw(st.integers(2, 12))
    return (
        draw(st.integers(1, 150)),
        window,
        draw(st.integers(1, window - 1)),
        draw(st.integers(1, 6)),
        draw(st.integers(1, window)),
    )


@settings(max_examples=400, deadline=None)
@given(plans())
def test_every_output_frame_comes_from_one_window_at_its_own_time(args):
    n, window, overlap, k, min_frames = args
    plan = plan_windows(n, window, overlap, k, min_frames)
    assert plan.n_outputs == k * n
    for j, src in enumerate(plan.sources):
        win = plan.windows[src.window]
        # Output j is at input time j/k; after the last input frame the last frame is held.
        assert k * win.start + src.index == min(j, k * (n - 1))
        assert 0 <= src.index <= k * (win.last - win.start)


@settings(max_examples=400, deadline=None)
@given(plans())
def test_windows_are_valid_model_calls_that_cover_the_clip(args):
    n, window, overlap, k, min_frames = args
    plan = plan_windows(n, window, overlap, k, min_frames)
    for win in plan.windows:
        real = sorted(set(win.frames))
        assert real == list(range(win.start, win.last + 1))  # consecutive, padding repeats the last
        assert len(win.frames) == max(min(window, n), min(min_frames, window))
        assert 0 <= win.start and win.last < n
    assert plan.windows[0].start == 0 and plan.windows[-1].last == n - 1  # head and tail covered
    starts = [w.start for w in plan.windows]
    assert starts == sorted(set(starts))
    for a, b in zip(plan.windows, plan.windows[1:]):
        assert b.start <= a.last  # consecutive windows share a frame: every gap is inside one window


@settings(max_examples=400, deadline=None)
@given(plans())
def test_outputs_stream_in_order_and_take_the_most_central_window(args):
    n, window, overlap, k, min_frames = args
    plan = plan_windows(n, window, overlap, k, min_frames)
    used = [src.window for src in plan.sources]
    assert used == sorted(used)  # so the run loop can emit frames as soon as a window is done
    covered = [j for r in plan.output_ranges for j in r]
    assert covered == list(range(plan.n_outputs))
    for j, src in enumerate(plan.sources):
        t = min(j, k * (n - 1))

        def centrality(w):
            return min(t - k * w.start, k * w.last - t)

        best = max(centrality(w) for w in plan.windows if k * w.start <= t <= k * w.last)
        assert centrality(plan.windows[src.window]) == best


def test_tail_frames_that_do_not_fill_a_window_are_kept():
    # The official ZSM scripts drop frames 8 and 9 here (4-frame windows sharing one frame).
    plan = plan_windows(10, 4, 1, 2)
    assert [w.frames for w in plan.windows] == [(0, 1, 2, 3), (3, 4, 5, 6), (6, 7, 8, 9)]
    assert plan.n_outputs == 20
    assert plan.sources[-1].window == 2


def test_edge_frames_come_from_the_window_where_they_are_central():
    plan = plan_windows(12, 6, 3, 2)
    assert list(window_starts(12, 6, 3)) == [0, 3, 6]
    # Input frame 5 (output 10) is the last frame of window 0 but central in window 1 (frames 3-8).
    src = plan.sources[10]
    assert plan.windows[src.window].frames == (3, 4, 5, 6, 7, 8) and src.index == 4
    # Frame 4 is one frame from an edge in both windows 0 and 1: the tie goes to the earlier one.
    assert plan.sources[8].window == 0
    assert plan.sources[2].window == 0 and plan.sources[22].window == 2


def test_single_frame_video_is_padded_and_held():
    plan = plan_windows(1, 4, 1, 3, min_frames=2)
    assert [w.frames for w in plan.windows] == [(0, 0)]
    assert [(s.window, s.index) for s in plan.sources] == [(0, 0)] * 3


def test_short_video_uses_one_shorter_window():
    plan = plan_windows(3, 7, 2, 2)
    assert [w.frames for w in plan.windows] == [(0, 1, 2)]
    assert [s.index for s in plan.sources] == [0, 1, 2, 3, 4, 4]


@pytest.mark.parametrize(
    "args",
    [(0, 4, 1, 2), (5, 1, 0, 2), (5, 4, 0, 2), (5, 4, 4, 2), (5, 4, 1, 0), (5, 3, 1, 2, 4)],
)
def test_invalid_plans_are_refused(args):
    with pytest.raises(ValueError):
        plan_windows(*args)


@st.composite
def plans_with_cuts(draw):
    n, window, overlap, k, min_frames = draw(plans())
    cuts = draw(st.sets(st.integers(1, max(1, n - 1)), max_size=6)) if n > 1 else set()
    return n, window, overlap, k, min_frames, sorted(cuts)


@settings(max_examples=400, deadline=None)
@given(plans_with_cuts())
def test_no_window_spans_a_cut_and_gaps_copy_the_nearer_real_frame(args):
    n, window, overlap, k, min_frames, cuts = args
    plan = plan_windows(n, window, overlap, k, min_frames, cuts=cuts)
    assert plan.n_outputs == k * n
    for win in plan.windows:
        assert not any(win.start < c <= win.last for c in cuts)
    shot_of = [sum(c <= i for c in cuts) for i in range(n)]
    for j, src in enumerate(plan.sources):
        win = plan.windows[src.window]
        time = k * win.start + src.index  # the time, in 1/k frames, whose output frame is used
        before, offset = divmod(j, k)
        if before + 1 < n and shot_of[before] == shot_of[before + 1] or offset == 0:
            assert time == j  # inside a shot: the model's frame at its own time
        elif before + 1 >= n:
            assert time == k * (n - 1)  # after the clip: the last frame held
        else:  # between two shots: a real frame, the nearer one (earlier on a tie)
            assert time == (k * before if offset <= k - offset else k * (before + 1))
    # Output frames still come window by window, in order.
    assert [s.window for s in plan.sources] == sorted(s.window for s in plan.sources)


def test_cut_between_two_shots_at_double_rate():
    plan = plan_windows(8, 4, 2, 2, cuts=[4])
    assert [w.frames for w in plan.windows] == [(0, 1, 2, 3), (4, 5, 6, 7)]
    in_between = plan.sources[7]  # time 3.5, between frame 3 (shot 1) and frame 4 (shot 2)
    assert in_between == plan.sources[6]  # the copy of frame 3, not a blend


@settings(max_examples=300, deadline=None)
@given(plans(), st.integers(1, 7), st.integers(1, 7))
def test_any_output_step_takes_each_frame_at_its_exact_time(args, num, den):
    from fractions import Fraction

    n, window, overlap, _, min_frames = args
    step = Fraction(num, den)
    n_outputs = max(1, round(n / step))
    plan = plan_windows(n, window, overlap, min_frames=min_frames, step=step, n_outputs=n_outputs)
    k = plan.fps_x
    assert plan.n_outputs == n_outputs == len(plan.sources)
    for j, src in enumerate(plan.sources):
        win = plan.windows[src.window]
        time = Fraction(k * win.start + src.index, k)
        assert time == min(j * step, n - 1)  # held after the last input frame
        assert win.start <= time <= win.last


def test_23_976_to_59_94_is_a_step_of_two_fifths():
    from fractions import Fraction

    plan = plan_windows(48, 7, 2, min_frames=2, step=Fraction(24000, 1001) / Fraction(60000, 1001), n_outputs=120)
    assert plan.step == Fraction(2, 5) and plan.fps_x == 5
    times = [Fraction(5 * plan.windows[s.window].start + s.index, 5) for s in plan.sources]
    assert times[:6] == [0, Fraction(2, 5), Fraction(4, 5), Fraction(6, 5), Fraction(8, 5), 2]


@settings(max_examples=300, deadline=None)
@given(plans_with_cuts(), st.integers(1, 7), st.integers(1, 7))
def test_any_step_with_cuts_never_blends_two_shots(args, num, den):
    from fractions import Fraction

    n, window, overlap, _, min_frames, cuts = args
    step = Fraction(num, den)
    plan = plan_windows(n, window, overlap, min_frames=min_frames, cuts=cuts, step=step, n_outputs=max(1, round(n / step)))
    k = plan.fps_x
    shot_of = [sum(c <= i for c in cuts) for i in range(n)]
    for j, src in enumerate(plan.sources):
        win = plan.windows[src.window]
        assert not any(win.start < c <= win.last for c in cuts)
        time = Fraction(k * win.start + src.index, k)
        wanted = min(j * step, n - 1)
        before = int(wanted)
        if wanted == before or shot_of[before] == shot_of[min(before + 1, n - 1)]:
            assert time == wanted
        else:  # between two shots: the nearer real frame, the earlier on a tie
            assert time == (before if wanted - before <= before + 1 - wanted else before + 1)


def test_first_frame_after_some_windows_is_where_the_next_call_starts():
    plan = plan_windows(20, 6, 2, 2, cuts=[9])
    used = []  # the windows that supply output frames, in order
    for s in plan.sources:
        if not used or used[-1] != s.window:
            used.append(s.window)
    assert [plan.first_frame_after(n) for n in range(len(used))] == [plan.windows[w].start for w in used]
    assert plan.first_frame_after(len(used)) == 20 and plan.first_frame_after(0) == 0
