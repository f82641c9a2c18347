"""Hard telecine undone: the 3:2 cadence found in the first seconds, the film's own frames back
through fieldmatch + decimate at 24000/1001, and everything else left to bwdif."""

import json
import math
from fractions import Fraction

import numpy as np
import pytest
from click.testing import CliRunner
from media import make_interlaced_video, make_telecined_video, make_video, pattern, read_frames, stream_facts

from stvsr_cli import upscale
from stvsr_cli.cli import main
from stvsr_cli.io.decode import VideoReader, probe, without_pulldown
from stvsr_cli.io.filters import FrameFilters
from stvsr_cli.io.encode import EncodeSettings
from stvsr_cli.io.workdir import work_folder_for
from stvsr_cli.pipeline import source as source_stage
from stvsr_cli.pipeline.telecine import detect_telecine, find_cadence

OPTIONS = {"model": "classic", "scale": 2, "fps_x": 2, "scene_detect": False}
FILM = Fraction(24000, 1001)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def pulldown_changes(frames: int, phase: int, still: float = 0.2, moving: float = 6.0) -> list[tuple[float, float]]:
    """Field changes of a 3:2 transfer: frames at ``phase`` repeat the top field, at ``phase + 2`` the
    bottom one (entry i is frame i + 1 against frame i)."""
    changes = []
    for j in range(1, frames):
        top = still if j % 5 == phase else moving
        bottom = still if j % 5 == (phase + 2) % 5 else moving
        changes.append((top, bottom))
    return changes


@pytest.mark.parametrize("phase", range(5))
def test_the_cadence_and_its_phase_are_found(phase):
    found = find_cadence(pulldown_changes(50, phase))
    repeating = sum(1 for j in range(1, 50) if j % 5 in (phase, (phase + 2) % 5))
    assert found.found and found.phase == phase and found.repeats == repeating and not found.broken


def test_video_without_repeated_fields_has_no_cadence():
    interlaced = find_cadence([(5.0, 5.5)] * 49)  # every field its own moment
    assert not interlaced.found and not interlaced.broken and interlaced.repeats == 0
    still = find_cadence(pulldown_changes(50, 1, still=0.1, moving=0.5))  # nothing moves: nothing to tell
    assert not still.found and still.moving == 0


def test_a_cadence_broken_by_an_edit_is_not_followed():
    changes = pulldown_changes(30, 1) + pulldown_changes(30, 3)  # the edit moves the cadence half way
    found = find_cadence(changes)
    assert not found.found and found.broken


def film_frames(path) -> list[np.ndarray]:
    with VideoReader(probe(path)) as reader:
        return list(reader.frames())


def test_the_film_frames_come_back_from_hard_telecine(tmp_path):
    src, film = tmp_path / "tc.mp4", tmp_path / "film.mp4"
    make_telecined_video(src, film_frames=40, crf=6)
    # The film itself, progressive and lossless, by the same encoder (which tags the chroma siting
    # that the conversion to RGB follows).
    make_telecined_video(film, film_frames=40, pulldown="none", crf=0)
    info = probe(src)
    assert info.interlaced and info.frame_rate == Fraction(30000, 1001) and info.frame_count == 50
    assert detect_telecine(info).found
    film_info = without_pulldown(info)
    assert film_info.frame_rate == FILM and film_info.frame_count == 40
    with VideoReader(film_info, filters=FrameFilters(ivtc=True)) as reader:
        frames = list(reader.frames())
    originals = film_frames(film)
    assert len(frames) == len(originals) == 40
    for got, original in zip(frames, originals, strict=True):
        assert psnr(got, original) >= 40  # each frame its own film frame, none blended or repeated


def test_upscale_of_a_telecined_clip_is_the_upscale_of_its_film(tmp_path):
    src, film = tmp_path / "tc.mp4", tmp_path / "film.mp4"
    make_telecined_video(src, film_frames=40, audio=True, crf=6)
    make_telecined_video(film, film_frames=40, pulldown="none", crf=0)
    lossless = ["--codec", "ffv1", "--pix-fmt", "bgr0"]
    out = tmp_path / "out.mkv"
    result = CliRunner().invoke(main, ["upscale", str(src), str(out), "--model", "classic", "--scale", "2",
                                       *lossless, "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["pulldown_removed"] and not report["deinterlaced"] and report["telecine"]["found"]
    assert report["frames_in"] == 40 and report["rate_in"] == "24000/1001" and report["rate_out"] == "48000/1001"
    facts = stream_facts(out)
    assert facts["frames"] == 80 and facts["rate"] == pytest.approx(float(2 * FILM), rel=1e-3)  # ms timestamps
    input_span = float(50 / Fraction(30000, 1001))
    assert facts["video_span"] == pytest.approx(input_span, abs=2e-3)  # the input's length, to the ms
    # The audio is copied: its span as the input's (to the containers' rounding of AAC's priming).
    assert float(facts["audio_spans"][0]) == pytest.approx(float(stream_facts(src)["audio_spans"][0]), abs=0.03)
    upscale(film, tmp_path / "film_out.mkv", encode=EncodeSettings(codec="ffv1", pix_fmt="bgr0"), **OPTIONS)
    got, expected = read_frames(out), read_frames(tmp_path / "film_out.mkv")
    assert len(got) == len(expected) == 80
    assert min(psnr(a, b) for a, b in zip(got, expected, strict=True)) >= 40


def test_pal_and_true_interlaced_video_are_left_to_bwdif(tmp_path):
    pal, interlaced = tmp_path / "pal.mp4", tmp_path / "interlaced.mp4"
    make_telecined_video(pal, film_frames=40, pulldown="2:2")
    make_interlaced_video(interlaced, frames=40)
    for src in (pal, interlaced):
        result = upscale(src, tmp_path / f"{src.stem}_out.mp4", **OPTIONS)
        assert result.deinterlaced and not result.pulldown_removed and not result.telecine["found"]
        assert result.frames_in == 40 and result.warnings == []


def test_a_broken_cadence_falls_back_to_bwdif_in_one_line(tmp_path):
    src = tmp_path / "edited.mp4"
    make_telecined_video(src, film_frames=64, drop_video_frame=37)  # an edit half way moves the cadence
    result = upscale(src, tmp_path / "out.mp4", **OPTIONS)
    assert result.deinterlaced and not result.pulldown_removed
    assert len(result.warnings) == 1 and "not in one 3:2 cadence" in result.warnings[0]
    forced = upscale(src, tmp_path / "forced.mp4", ivtc="on", **OPTIONS)
    assert forced.pulldown_removed and forced.warnings == []


def test_ivtc_off_or_a_progressive_clip_is_not_looked_at(tmp_path, monkeypatch):
    src, progressive = tmp_path / "tc.mp4", tmp_path / "p.mp4"
    make_telecined_video(src, film_frames=20)
    make_video(progressive, frames=10, content=pattern)
    monkeypatch.setattr(source_stage, "detect_telecine", lambda info: pytest.fail("looked for a cadence"))
    off = upscale(src, tmp_path / "off.mp4", ivtc="off", **OPTIONS)
    assert off.deinterlaced and off.telecine is None and off.frames_in == 25
    assert upscale(progressive, tmp_path / "p_out.mp4", **OPTIONS).telecine is None


def test_a_resumed_run_reuses_the_cadence_and_gives_the_same_frames(tmp_path, monkeypatch):
    src, out, reference = tmp_path / "tc.mp4", tmp_path / "out.mkv", tmp_path / "reference.mkv"
    make_telecined_video(src, film_frames=80)
    lossless = {**OPTIONS, "encode": EncodeSettings(codec="ffv1", pix_fmt="bgr0"), "segment_frames": 40}
    upscale(src, reference, **lossless)

    def interrupt(done, total):
        if done >= 60:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        upscale(src, out, progress=interrupt, **lossless)
    manifest = json.loads((work_folder_for(out) / "manifest.json").read_text())
    assert manifest["cadence"]["found"] and len(manifest["segments"]) >= 1
    monkeypatch.setattr(source_stage, "detect_telecine", lambda info: pytest.fail("checked the cadence again"))
    result = upscale(src, out, **lossless)
    assert result.pulldown_removed and result.frames_out == 160
    got, expected = read_frames(out), read_frames(reference)
    assert len(got) == len(expected) == 160
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_target_rate_still_works_on_the_film_frames(tmp_path):
    src = tmp_path / "tc.mp4"
    make_telecined_video(src, film_frames=40)
    result = upscale(src, tmp_path / "out.mp4", model="classic", scale=2, fps=Fraction(60000, 1001), scene_detect=False)
    assert result.pulldown_removed and result.rate_out == Fraction(60000, 1001)
    facts = stream_facts(tmp_path / "out.mp4")
    assert facts["frames"] == 100 and facts["video_span"] == pytest.approx(float(50 / Fraction(30000, 1001)), abs=1e-3)
