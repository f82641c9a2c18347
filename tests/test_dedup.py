"""--dedup: frames that repeat the previous one (telecine, frame-rate conversions) are found, dropped
from the model's input and the rest re-timed, so that doubling the rate does not double the stall."""

import json
from fractions import Fraction
from itertools import pairwise

import numpy as np
import pytest
from click.testing import CliRunner
from media import make_video, pattern, read_frames, stream_facts

from stvsr_cli import upscale
from stvsr_cli.cli import main
from stvsr_cli.errors import UsageError
from stvsr_cli.io.encode import EncodeSettings
from stvsr_cli.io.workdir import work_folder_for
from stvsr_cli.options import UpscaleOptions
from stvsr_cli.pipeline.repeats import Retiming, choose_repeats, find_repeats, scan_repeats

LOSSLESS = EncodeSettings(codec="ffv1", pix_fmt="bgr0")
OPTIONS = {"model": "classic", "scale": 2, "fps_x": 2, "encode": LOSSLESS}
ONE_IN_FIVE = [i for i in range(39) if i % 5 == 4]  # a b c d d | e f g h h | ...
TWO_IN_FIVE = [i for i in range(38) if i % 5 in (1, 3)]  # a a b b c | d d e e f | ...


def differences(n: int, repeated=(), cuts=(), still=(), seed: int = 0, motion=(2, 4)) -> list[float]:
    """Scene-scan numbers (mafd of frames 1..n-1): motion 2-4 % (or ``motion``), repeats and stills
    near 0 (noise), cuts 40 %."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(1, n):
        if i in cuts:
            out.append(40.0)
        elif i in repeated or i in still:
            out.append(float(rng.uniform(0, 0.1)))
        else:
            out.append(float(rng.uniform(*motion)))
    return out


@pytest.mark.parametrize("repeated, offsets", [(ONE_IN_FIVE, (4,)), (TWO_IN_FIVE, (1, 3))])
def test_regular_repeats_are_found_and_called_regular(repeated, offsets):
    n = repeated[-1] + 2
    found = find_repeats(differences(n, set(repeated)), [])
    assert found == repeated
    dedup = choose_repeats("auto", n, [], found)
    assert dedup is not None and list(dedup.repeated) == repeated
    assert [(c.period, c.offsets) for c in dedup.cadences] == [(5, offsets)]


def test_unique_frames_are_spread_evenly_over_each_period():
    dedup = choose_repeats("auto", 39, [], ONE_IN_FIVE)  # 4 unique frames every 5 input frames
    retiming = Retiming(dedup)
    for j in range(2 * 38):  # up to the last frame: unique frame u at 5/4 u exactly, the part period at the end too
        assert retiming.position(Fraction(j, 2)) == Fraction(j, 2) * Fraction(4, 5)
    dedup = choose_repeats("auto", 38, [], TWO_IN_FIVE)  # 3 unique frames every 5, periods from frame 2 (b)
    retiming = Retiming(dedup)
    for j in range(4, 2 * 37):
        assert retiming.position(Fraction(j, 2)) == 1 + (Fraction(j, 2) - 2) * Fraction(3, 5)
    assert retiming.position(Fraction(1, 2)) == Fraction(1, 4)  # before the first period: a spread over 0-2


def test_a_shot_that_starts_on_a_copied_frame_moves_from_its_first_output():
    copies = [i for i in range(40) if i % 5 == 1]  # a a b c d | e e f g h | ... (decord's pancake clip)
    retiming = Retiming(choose_repeats("auto", 40, [], copies))
    positions = [retiming.position(Fraction(j, 2)) for j in range(2 * 39 + 1)]
    assert all(a < b for a, b in pairwise(positions))


def test_a_still_shot_is_not_a_repeat_pattern():
    assert find_repeats(differences(40, still=set(range(40))), []) == []  # nothing moves: nothing to tell apart
    pause = set(range(11, 30))  # a shot that stops for 20 frames and moves on: a still, not copies
    assert find_repeats(differences(40, still=pause), []) == []
    assert choose_repeats("auto", 40, [], []) is None and choose_repeats("on", 40, [], []) is None


def test_irregular_repeats_are_dropped_only_when_asked():
    stray = {7, 19, 20, 33}  # dropped or doubled frames, no rhythm
    found = find_repeats(differences(40, stray), [])
    assert found == sorted(stray)
    assert choose_repeats("auto", 40, [], found) is None  # auto: left alone
    on = choose_repeats("on", 40, [], found)
    assert on is not None and list(on.repeated) == sorted(stray) and on.cadences == ()
    retiming = Retiming(on)  # each unique frame after a copy keeps its place; those before share the hold
    assert retiming.position(Fraction(8)) == 7 and retiming.position(Fraction(4)) == Fraction(7, 2)
    positions = [retiming.position(Fraction(j, 2)) for j in range(2 * 39 + 1)]
    assert all(a < b for a, b in pairwise(positions))
    assert choose_repeats("off", 40, [], found) is None


def test_cuts_are_not_repeats_and_each_shot_has_its_own_rhythm():
    first = {i for i in range(23) if i % 5 == 4}
    second = {i for i in range(23, 60) if (i - 23) % 6 == 2}  # 1 in 6 after the cut, another phase
    diffs = differences(60, first | second, cuts={23})
    diffs[22] = 0.0  # frame 23 looks like frame 22, yet it starts a shot: not a repeat
    found = find_repeats(diffs, [23])
    assert 23 not in found and found == sorted(first | second)
    dedup = choose_repeats("auto", 60, [23], found)
    assert [(c.start, c.period, c.offsets) for c in dedup.cadences] == [(0, 5, (4,)), (23, 6, (2,))]
    retiming = Retiming(dedup)
    assert retiming.cuts == [23 - len(first)]
    assert retiming.position(Fraction(23)) == 23 - len(first)  # the next shot starts where it did
    assert retiming.position(Fraction(45, 2)) == 23 - len(first) - Fraction(1, 2)  # between shots: offset kept


def test_a_unique_frame_between_copies_is_not_taken_for_a_cut():
    fast = (8, 12)  # motion enough that a unique frame between copies scores above the cut threshold
    diffs = differences(38, set(TWO_IN_FIVE), motion=fast) + [40.0] + differences(20, seed=1, motion=fast)
    plain, _ = scan_repeats(diffs, 5.0, "off")
    assert 2 in plain and 38 in plain  # "a a b b c": b and c stand out from both neighbours, as a cut does
    cuts, dedup = scan_repeats(diffs, 5.0, "auto")
    assert cuts == [38] and list(dedup.repeated) == TWO_IN_FIVE
    assert scan_repeats(diffs, None, "auto")[0] == []  # --no-scene-detect: no cuts either way


def test_manifest_records_the_option():
    record = UpscaleOptions(dedup="on").manifest(model="classic", window=8, overlap=1, encode=LOSSLESS)
    assert record["dedup"] == "on"
    with pytest.raises(UsageError, match="--dedup"):
        UpscaleOptions(dedup="sometimes")


def repeating(repeated):
    """Video content in which the frames ``repeated`` copy the one before (the rest move)."""
    repeated = sorted(repeated)

    def content(i, height, width):
        return pattern(i - sum(r <= i for r in repeated), height, width)

    return content


def still_between_motion(i, height, width):
    """Frames 0-11 move, 12-29 hold frame 11 (a pause), 30-39 move on."""
    return pattern(i if i < 12 else 11 if i < 30 else i - 18, height, width)


def alike(a: np.ndarray, b: np.ndarray) -> bool:
    """The same picture, up to codec noise."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()) < 0.5


def stalls(frames: list[np.ndarray]) -> list[int]:
    return [j for j in range(len(frames) - 1) if alike(frames[j], frames[j + 1])]


@pytest.mark.parametrize("repeated", [ONE_IN_FIVE, TWO_IN_FIVE], ids=["1-in-5", "2-in-5"])
def test_dedup_removes_the_judder_and_keeps_the_timing(tmp_path, repeated):
    n = repeated[-1] + 2  # the clip ends on a unique frame
    src = tmp_path / "telecined.mp4"
    make_video(src, frames=n, content=repeating(repeated))
    plain, fixed = tmp_path / "off.mkv", tmp_path / "auto.mkv"
    before = upscale(src, plain, dedup="off", **OPTIONS)
    after = upscale(src, fixed, dedup="auto", **OPTIONS)
    assert not before.dedup and before.repeated_frames == []
    assert after.dedup and after.repeated_frames == repeated and len(after.repeat_patterns) == 1
    assert (after.frames_out, after.rate_out, after.duration) == (before.frames_out, before.rate_out, before.duration)
    facts_before, facts_after = stream_facts(plain), stream_facts(fixed)
    assert facts_after["frames"] == facts_before["frames"] == 2 * n and facts_after["times"] == facts_before["times"]
    assert len(stalls(read_frames(plain))) > len(repeated)  # each copy stalls the doubled output
    assert stalls(read_frames(fixed)) == [2 * n - 2]  # only the held frame after the last input


def test_a_still_shot_is_left_alone(tmp_path):
    src = tmp_path / "pause.mp4"
    make_video(src, frames=40, content=still_between_motion)
    plain = tmp_path / "off.mkv"
    upscale(src, plain, dedup="off", **OPTIONS)
    expected = read_frames(plain)
    for mode in ("auto", "on"):
        out = tmp_path / f"{mode}.mkv"
        result = upscale(src, out, dedup=mode, **OPTIONS)
        assert not result.dedup and result.repeated_frames == []
        got = read_frames(out)
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)


def test_json_lists_the_repeated_frames(tmp_path):
    src = tmp_path / "telecined.mp4"
    make_video(src, frames=39, content=repeating(ONE_IN_FIVE))
    args = ["upscale", str(src), str(tmp_path / "out.mp4"), "--model", "classic", "--scale", "2", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["dedup"] is True and summary["repeated_frames"] == ONE_IN_FIVE
    assert summary["repeat_patterns"] == ["1 in 5 over frames 0-38"] and summary["frames"] == 78
    result = CliRunner().invoke(main, [*args[:2], str(tmp_path / "off.mp4"), *args[3:], "--dedup", "off"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["dedup"] is False and summary["repeated_frames"] == [] and summary["frames"] == 78


def test_an_interrupted_dedup_run_resumes_with_the_same_frames(tmp_path):
    src = tmp_path / "telecined.mp4"
    make_video(src, frames=59, content=repeating([i for i in range(59) if i % 5 == 4]))
    options = {**OPTIONS, "dedup": "on", "segment_frames": 20, "window": 4}
    reference, out = tmp_path / "reference.mkv", tmp_path / "out.mkv"
    upscale(src, reference, **options)

    def interrupt(done, total):
        if done >= 70:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        upscale(src, out, progress=interrupt, **options)
    manifest = json.loads((work_folder_for(out) / "manifest.json").read_text())
    assert manifest["job"]["options"]["dedup"] == "on" and manifest["repeats"]
    kept = sum(s["frames"] for s in manifest["segments"])
    redone, scanned = [], []
    upscale(
        src, out, progress=lambda done, _: redone.append(done), scan_progress=lambda *a: scanned.append(a), **options
    )
    assert 0 < kept and len(redone) == 118 - kept  # resumed after the kept segments
    assert scanned == []  # the cuts and repeats the work folder recorded are reused, not scanned again
    for a, b in zip(read_frames(out), read_frames(reference), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_fixed_factor_model_takes_the_nearest_frame_and_says_so(tmp_path, monkeypatch):
    registry = tmp_path / "models.toml"
    registry.write_text('[models.blend-x2]\narch = "classic"\nscale = "any"\nfps_x = 2\nwindow = 8\noverlap = 1\n')
    monkeypatch.setenv("STVSR_REGISTRY", str(registry))
    src = tmp_path / "telecined.mp4"
    make_video(src, frames=39, content=repeating(ONE_IN_FIVE))
    options = {**OPTIONS, "model": "blend-x2"}
    before = upscale(src, tmp_path / "off.mkv", dedup="off", **options)
    after = upscale(src, tmp_path / "auto.mkv", dedup="auto", **options)
    assert after.dedup and after.frames_out == before.frames_out == 78
    assert any("nearest" in w and "blend-x2" in w for w in after.warnings)
    assert not any("nearest" in w for w in before.warnings)
    # Unique frame u is at 5/4 u: output j (time j/2) at 2j/5 unique frames, rounded to the model's halves,
    # so outputs 5i + 2 and 5i + 3 (at 2i + 4/5 and 2i + 6/5) are both frame 2i + 1; the end holds.
    assert stalls(read_frames(tmp_path / "auto.mkv")) == [j for j in range(76) if j % 5 == 2] + [76]


def test_back_at_the_film_rate_the_output_is_the_film_frames(tmp_path):
    """25 fps showing 1 frame in 5 twice is 20 fps film: asked for 20 fps, each output frame is a
    film frame at its true time (unique frame j at 5/4 j), none blended, none repeated."""
    src, film = tmp_path / "telecined.mkv", tmp_path / "film.mkv"
    lossless = {"codec": "ffv1", "pix_fmt": "bgr0"}
    make_video(src, frames=39, content=repeating(ONE_IN_FIVE), **lossless)
    make_video(film, frames=31, **lossless)  # the 31 unique frames
    result = upscale(src, tmp_path / "out.mkv", fps=20, **OPTIONS)
    assert result.dedup and result.frames_out == 31 and result.rate_out == 20
    upscale(film, tmp_path / "film_x1.mkv", **{**OPTIONS, "fps_x": 1})
    for a, b in zip(read_frames(tmp_path / "out.mkv"), read_frames(tmp_path / "film_x1.mkv"), strict=True):
        np.testing.assert_array_equal(a, b)
