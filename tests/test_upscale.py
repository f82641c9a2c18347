"""stvsr upscale end to end on tiny synthetic videos: counts, rates, durations, audio, pixels."""

import json
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from media import make_video, read_frames, smooth, stream_facts

from stvsr_cli import upscale as upscale_api
from stvsr_cli.cli import main
from stvsr_cli.io.encode import EncodeSettings

LOSSLESS = ["--codec", "ffv1", "--pix-fmt", "bgr0"]


def run_cli(*args):
    """The pipeline's behaviour is pinned with ``classic``, whose pixels can be computed directly."""
    model = [] if "--model" in args else ["--model", "classic"]
    return CliRunner().invoke(main, ["upscale", *map(str, args), *model])


def upscale(*args, **kwargs):
    return upscale_api(*args, **{"model": "classic", **kwargs})


def expected_classic(frames: list[np.ndarray], scale: int, k: int) -> list[np.ndarray]:
    """Bicubic + linear blending computed directly, frame by frame, rounded to 8 bits."""
    up = []
    for f in frames:
        x = torch.from_numpy(f).permute(2, 0, 1)[None].double() / 255
        up.append(F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)[0].clamp(0, 1))
    out = []
    for j in range(k * len(frames)):
        i, s = divmod(min(j, k * (len(frames) - 1)), k)
        value = up[i] if s == 0 else (1 - s / k) * up[i] + (s / k) * up[i + 1]
        out.append((value * 255).round().byte().permute(1, 2, 0).numpy())
    return out


def test_default_upscale_keeps_duration_and_audio(clip, tmp_path):
    out = tmp_path / "out.mp4"
    result = CliRunner().invoke(main, ["upscale", str(clip), str(out), "--json"])  # the default model
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["frames_in"] == 10 and summary["frames_out"] == 20 and summary["rate_out"] == "50"
    src, dst = stream_facts(clip), stream_facts(out)
    assert dst["frames"] == 20 and dst["rate"] == 50
    assert (dst["width"], dst["height"]) == (128, 96)
    frame = Fraction(1, 50)
    assert abs(dst["video_span"] - src["video_span"]) <= frame
    assert dst["audio_codecs"] == ["aac"]
    assert dst["audio_spans"] == src["audio_spans"]  # copied, not re-encoded
    assert abs(dst["audio_spans"][0] - dst["video_span"]) <= Fraction(1, 25)
    # Output frame j is shown at j / 50 s: an exact constant-rate grid.
    assert dst["times"] == [Fraction(j, 50) for j in range(20)]
    assert dst["keyframes"] == 1  # ordinary inter-frame coding, not 20 forced keyframes


def test_ntsc_rate_doubles_exactly(tmp_path):
    src, out = tmp_path / "ntsc.mp4", tmp_path / "out.mp4"
    make_video(src, frames=12, rate=Fraction(24000, 1001), audio=True)
    result = upscale(src, out)
    assert result.rate_out == Fraction(48000, 1001) and result.frames_out == 24
    assert result.duration == Fraction(12 * 1001, 24000)
    facts = stream_facts(out)
    assert facts["rate"] == Fraction(48000, 1001) and facts["frames"] == 24
    assert facts["times"][-1] == Fraction(23 * 1001, 48000)
    assert abs(facts["audio_spans"][0] - facts["video_span"]) <= Fraction(1001, 24000)


@pytest.mark.parametrize("scale,k", [(4, 2), (2, 3)])
def test_classic_pixels_match_a_direct_computation(tmp_path, scale, k):
    src, out = tmp_path / "in.mkv", tmp_path / "out.mkv"
    frames = make_video(src, frames=6, codec="ffv1", pix_fmt="bgr0", size=(13, 9))
    result = run_cli(src, out, "--scale", scale, "--fps-x", k, "--window", 4, "--overlap", 1, *LOSSLESS)
    assert result.exit_code == 0, result.stderr
    got = read_frames(out)
    want = expected_classic(frames, scale, k)
    assert len(got) == len(want) == k * 6
    for g, w in zip(got, want):
        assert np.abs(g.astype(int) - w.astype(int)).max() <= 1  # float32 vs float64 rounding


def test_odd_size_lossless_input(tmp_path):
    src, out = tmp_path / "odd.mkv", tmp_path / "odd_x4.mp4"
    make_video(src, frames=4, codec="ffv1", pix_fmt="bgr0", size=(179, 143))
    result = upscale(src, out)
    facts = stream_facts(out)
    assert (facts["width"], facts["height"], facts["frames"]) == (716, 572, 8)
    assert result.out_width == 716


def test_variable_frame_rate_becomes_constant_by_timestamps(tmp_path):
    src, out = tmp_path / "vfr.mkv", tmp_path / "out.mkv"
    ms = [0, 40, 120, 160, 200, 320]
    frames = make_video(src, frames=6, rate=25, codec="ffv1", pix_fmt="bgr0", times=[Fraction(t, 1000) for t in ms])
    result = upscale(src, out, scale=1, encode=EncodeSettings(codec="ffv1", pix_fmt="bgr0"))
    got = read_frames(out)
    assert result.frames_in == 9 and len(got) == 18  # 360 ms at 25 fps -> 9 grid frames, x2
    assert stream_facts(out)["times"] == [Fraction(j, 50) for j in range(18)]
    # Real (even) output frames are the nearest input frame by time, not by index.
    for j, source in enumerate([0, 1, 1, 2, 3, 4, 4, 5, 5]):
        np.testing.assert_array_equal(got[2 * j], frames[source])


def test_rotation_aspect_and_colour_tags_carry_over(tmp_path):
    src, out = tmp_path / "rot.mp4", tmp_path / "out.mp4"
    make_video(src, frames=4, rotation=90, sar=Fraction(4, 3), colorspace=1)
    upscale(src, out)
    facts = stream_facts(out)
    assert facts["rotation"] == 90 and facts["colorspace"] == 1
    assert (facts["width"], facts["height"]) == (128, 96)  # stored unrotated; players rotate
    from stvsr_cli.io.decode import probe

    assert probe(out).sample_aspect_ratio == Fraction(4, 3)


def test_untagged_input_gives_a_tagged_output(tmp_path, clip):
    out = tmp_path / "out.mp4"
    upscale(clip, out)
    # Read as BT.601 (a small untagged video); said so, so that players do not guess BT.709 at HD sizes.
    assert stream_facts(out)["colorspace"] == 6


def test_ten_bit_input_gives_ten_bit_output(tmp_path):
    src, out = tmp_path / "deep.mkv", tmp_path / "deep_x4.mkv"
    make_video(src, frames=3, codec="ffv1", pix_fmt="yuv420p10le")
    upscale(src, out, scale=2)
    assert stream_facts(out)["pix_fmt"] == "yuv420p10le"
    frames = read_frames(out, fmt="rgb48le")
    assert len(np.unique(frames[1] % 64)) > 1  # not 8-bit values padded to 16


def test_trim_processes_a_piece_and_its_audio(tmp_path):
    src, out = tmp_path / "long.mp4", tmp_path / "piece.mp4"
    make_video(src, frames=25, rate=25, audio=True)
    result = run_cli(src, out, "--start", "0.4", "--duration", "00:00.4", "--json")
    assert result.exit_code == 0, result.stderr
    facts = stream_facts(out)
    assert facts["frames"] == 20 and facts["times"][0] == 0
    assert abs(facts["video_span"] - Fraction(2, 5)) <= Fraction(1, 50)
    assert abs(facts["audio_spans"][0] - Fraction(2, 5)) <= Fraction(1, 25)


def test_single_frame_video(tmp_path):
    src, out = tmp_path / "one.mp4", tmp_path / "one_x.mp4"
    make_video(src, frames=1)
    assert upscale(src, out, fps_x=3).frames_out == 3
    assert stream_facts(out)["frames"] == 3


def test_subtitles_are_copied_where_the_container_takes_them(tmp_path):
    src = tmp_path / "subs.mkv"
    make_video(src, frames=6, audio=True, subtitle=True)
    same = upscale(src, tmp_path / "out.mkv")
    assert same.warnings == []
    assert stream_facts(tmp_path / "out.mkv")["subtitle_codecs"] == ["subrip"]
    result = run_cli(src, tmp_path / "out.mp4")
    assert result.exit_code == 0
    assert "subtitle stream" in result.stderr and "dropped" in result.stderr
    assert stream_facts(tmp_path / "out.mp4")["audio_codecs"] == ["aac"]


def test_audio_the_container_cannot_hold_is_reencoded(tmp_path, clip):
    out = tmp_path / "out.webm"
    result = upscale(clip, out)
    facts = stream_facts(out)
    assert facts["audio_codecs"] == ["opus"] and facts["frames"] == 20
    assert any("re-encoded" in w for w in result.warnings)
    assert abs(facts["audio_spans"][0] - facts["video_span"]) <= Fraction(1, 25)


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "stvsr_cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "stvsr" in result.stdout


@pytest.mark.parametrize("size,colorspace", [((64, 48), None), ((64, 48), 1), ((1280, 720), None)])
def test_colours_survive_the_round_trip(tmp_path, size, colorspace):
    """Scale 1, no new frames, lossless encode: the YUV planes come back (reader and writer agree
    on the matrix, whether tagged, or guessed from the size)."""
    src, out = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_video(src, frames=2, size=size, colorspace=colorspace, options={"qp": "0"}, content=smooth)
    upscale(src, out, scale=1, fps_x=1, encode=EncodeSettings(crf=0))
    before, after = read_frames(src, fmt="yuv420p")[0], read_frames(out, fmt="yuv420p")[0]
    assert np.abs(before.astype(int) - after.astype(int)).mean() < 0.1
    assert np.abs(before.astype(int) - after.astype(int)).max() <= 2


def test_progress_lines_when_stderr_is_not_a_terminal(clip, tmp_path, monkeypatch):
    """Logs and `make demo` output get a progress line (frames, rate, time left), not a live bar."""
    from stvsr_cli.display import PlainProgress

    monkeypatch.setattr(PlainProgress, "interval", 0.0)
    out = tmp_path / "out.mp4"
    result = CliRunner().invoke(main, ["upscale", str(clip), str(out), "--model", "classic"])
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("upscaling: ")]
    assert lines and lines[-1].startswith("upscaling: 20/20 frames, ") and "s left" in lines[-1]
    quiet = CliRunner().invoke(main, ["upscale", str(clip), str(out), "--model", "classic", "-q", "--overwrite"])
    assert quiet.exit_code == 0 and "upscaling:" not in quiet.stderr
