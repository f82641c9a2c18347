"""Real-world footage: scene cuts, interlacing, 10-bit and HDR tags, variable rate, late first frame."""

import json
from fractions import Fraction

import av
import numpy as np
import pytest
from click.testing import CliRunner
from media import combing, make_interlaced_video, make_ramp_video, make_video, pattern, read_frames, stream_facts

from stvsr_cli import upscale as upscale_api
from stvsr_cli.cli import main
from stvsr_cli.io.decode import probe
from stvsr_cli.io.encode import EncodeSettings
from stvsr_cli.pipeline.source import find_scene_cuts

LOSSLESS = EncodeSettings(codec="ffv1", pix_fmt="bgr0")


def upscale(*args, **kwargs):
    return upscale_api(*args, **{"model": "classic", **kwargs})


def two_shots(index: int, height: int, width: int) -> np.ndarray:
    """Frames 0-5 one shot, 6-11 another (the first one's negative, moving the other way)."""
    return pattern(index, height, width) if index < 6 else 255 - pattern(-index, height, width)


def pan(index: int, height: int, width: int) -> np.ndarray:
    """A camera pan over a blocky random picture, 2 pixels a frame."""
    rng = np.random.default_rng(7)
    scene = np.kron(rng.integers(0, 256, (height // 4 + 1, width // 4 + 20, 3)), np.ones((4, 4, 1)))
    return scene[:height, 2 * index : 2 * index + width].astype(np.uint8)


def test_two_shots_are_never_blended(tmp_path):
    src, out, blended = tmp_path / "cut.mkv", tmp_path / "out.mkv", tmp_path / "blend.mkv"
    make_video(src, frames=12, size=(48, 32), codec="ffv1", pix_fmt="bgr0", content=two_shots)
    result = CliRunner().invoke(
        main,
        ["upscale", str(src), str(out), "--model", "classic", "--scale", "2", "--codec", "ffv1", "--pix-fmt", "bgr0"]
        + ["--json", "--quiet"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["cuts"] == [6] and summary["cut_times"] == [0.24]
    got = read_frames(out)
    assert len(got) == 24
    np.testing.assert_array_equal(got[11], got[10])  # time 5.5: a copy of frame 5, the earlier on a tie
    assert not np.array_equal(got[9], got[8]) and not np.array_equal(got[9], got[10])  # inside a shot: new frames
    # Without scene detection the same frame is a mix of both shots.
    upscale(src, blended, scale=2, encode=LOSSLESS, scene_detect=False)
    mixed = read_frames(blended)[11]
    assert not np.array_equal(mixed, got[10]) and not np.array_equal(mixed, got[12])


def test_cut_copies_the_nearer_frame_at_four_times_the_rate(tmp_path):
    src, out = tmp_path / "cut.mkv", tmp_path / "out.mkv"
    make_video(src, frames=12, size=(48, 32), codec="ffv1", pix_fmt="bgr0", content=two_shots)
    result = upscale(src, out, scale=1, fps_x=4, encode=LOSSLESS)
    assert result.cuts == [6] and result.cut_times == [Fraction(6, 25)]
    got = read_frames(out)
    # Times 5.25 and 5.5 repeat frame 5; 5.75 is frame 6 of the next shot.
    for j in (21, 22):
        np.testing.assert_array_equal(got[j], got[20])
    np.testing.assert_array_equal(got[23], got[24])


def test_no_cut_in_a_smooth_pan_or_a_moving_pattern(tmp_path):
    panning, moving = tmp_path / "pan.mp4", tmp_path / "moving.mp4"
    make_video(panning, frames=20, size=(64, 48), content=pan)
    make_video(moving, frames=20, size=(64, 48))
    assert find_scene_cuts(probe(panning)) == []
    assert find_scene_cuts(probe(moving)) == []


def test_scene_threshold_and_switch(tmp_path):
    src = tmp_path / "cut.mp4"
    make_video(src, frames=12, size=(48, 32), content=two_shots)
    info = probe(src)
    assert find_scene_cuts(info) == [6]
    assert find_scene_cuts(info, threshold=99) == []
    result = upscale(src, tmp_path / "out.mp4", scene_detect=False)
    assert result.cuts == []


def test_interlaced_input_is_deinterlaced_when_the_stream_says_so(tmp_path):
    src = tmp_path / "tape.mkv"
    woven = make_interlaced_video(src)
    info = probe(src)
    assert info.interlaced and info.field_order == "tt"
    auto, off = tmp_path / "auto.mkv", tmp_path / "off.mkv"
    result = upscale(src, auto, scale=1, fps_x=1, encode=LOSSLESS)
    assert result.deinterlaced
    assert not upscale(src, off, scale=1, fps_x=1, encode=LOSSLESS, deinterlace="off").deinterlaced
    kept, fixed = read_frames(off), read_frames(auto)
    assert len(fixed) == len(kept) == len(woven)  # the frame rate is kept
    assert probe(auto).frame_rate == info.frame_rate
    for before, after in zip(kept[1:], fixed[1:]):
        assert combing(after) < 0.5 * combing(before)


def test_progressive_input_is_left_alone_unless_asked(tmp_path):
    src = tmp_path / "p.mkv"
    frames = make_video(src, frames=4, codec="ffv1", pix_fmt="bgr0")
    assert not probe(src).interlaced
    result = upscale(src, tmp_path / "a.mkv", scale=1, fps_x=1, encode=LOSSLESS)
    assert not result.deinterlaced
    np.testing.assert_array_equal(read_frames(tmp_path / "a.mkv")[2], frames[2])
    forced = upscale(src, tmp_path / "on.mkv", scale=1, fps_x=1, encode=LOSSLESS, deinterlace="on")
    assert forced.deinterlaced and len(read_frames(tmp_path / "on.mkv")) == 4


HDR_TAGS = {"color_primaries": 9, "color_trc": 16, "colorspace": 9, "color_range": 1}  # BT.2020, PQ, limited


def _tags(path) -> dict[str, int]:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return {name: int(getattr(frame, name)) for name in HDR_TAGS}


def test_ten_bit_hdr_stays_ten_bit_with_its_tags(tmp_path):
    src = tmp_path / "hdr.mkv"
    make_ramp_video(src, tags=HDR_TAGS)
    assert probe(src).bit_depth == 10 and _tags(src) == HDR_TAGS
    for name, codec in (("x264.mp4", None), ("x265.mkv", "libx265")):
        out = tmp_path / name
        upscale(src, out, scale=2, encode=EncodeSettings(codec=codec))
        assert stream_facts(out)["pix_fmt"] == "yuv420p10le"
        assert _tags(out) == HDR_TAGS
    # No 8-bit step inside: a lossless 10-bit output keeps far more grey levels than 8 bits have.
    lossless = tmp_path / "ffv1.mkv"
    upscale(src, lossless, scale=2, encode=EncodeSettings(codec="ffv1"))
    with av.open(str(lossless)) as container:
        frame = next(container.decode(video=0))
        assert frame.format.name == "yuv420p10le"
        luma = np.frombuffer(frame.planes[0], np.uint16)
    assert len(np.unique(luma)) > 600


def test_variable_rate_with_a_late_first_frame_keeps_duration_and_audio_sync(tmp_path):
    src, out = tmp_path / "vfr.mkv", tmp_path / "out.mkv"
    ms = [1000, 1040, 1120, 1160, 1200, 1320, 1360, 1480]  # uneven durations, first frame at 1 s
    make_video(src, frames=8, rate=25, times=[Fraction(t, 1000) for t in ms], audio=True)
    info = probe(src)
    assert info.variable_frame_rate and info.start_time == 1
    result = upscale(src, out, scale=2)
    assert result.frames_in == 13 and result.frames_out == 26  # 1.00 .. 1.48 s on the 40 ms grid
    facts = stream_facts(out)
    times = facts["times"]
    assert times[0] == 1 and times == [1 + Fraction(j, 50) for j in range(26)]
    assert facts["video_span"] == Fraction(26, 50) == result.duration
    with av.open(str(src)) as a, av.open(str(out)) as b:
        first_audio = [next(c.demux(audio=0)).pts * Fraction(c.streams.audio[0].time_base) for c in (a, b)]
    assert first_audio[0] == first_audio[1]  # audio keeps its place against the video


def test_target_frame_rate_maps_every_output_time_onto_the_input(tmp_path):
    """23.976 -> 59.94 fps: 48 frames (2.002 s) give 120 frames at exactly j * 1001/60000 s; real
    frames where an output time meets an input frame, exact blends at t = 0.2, 0.4, ... between."""
    import torch

    src, out = tmp_path / "film.mkv", tmp_path / "out.mkv"
    frames = make_video(src, frames=48, rate=Fraction(24000, 1001), codec="ffv1", pix_fmt="bgr0", audio=True)
    result = upscale(src, out, scale=1, fps="60000/1001", encode=LOSSLESS, scene_detect=False)
    assert result.frames_out == 120 and result.rate_out == Fraction(60000, 1001) and result.fps_x is None
    facts = stream_facts(out)
    assert facts["frames"] == 120 and probe(out).frame_rate == Fraction(60000, 1001)
    # Matroska keeps milliseconds: every frame within half a millisecond of j * 1001/60000 s.
    assert all(abs(t - Fraction(1001 * j, 60000)) <= Fraction(1, 2000) for j, t in enumerate(facts["times"]))
    assert result.duration == Fraction(120 * 1001, 60000) == Fraction(48 * 1001, 24000)
    got = read_frames(out)
    for j in (0, 5, 10, 115):  # input frames 0, 2, 4, 46
        np.testing.assert_array_equal(got[j], frames[2 * j // 5])
    for j in (1, 7, 13):  # t = 0.4, 2.8, 5.2
        position = Fraction(2 * j, 5)
        i, s = int(position), float(position - int(position))
        a, b = (torch.from_numpy(frames[x]).double() for x in (i, i + 1))
        expected = ((1 - s) * a + s * b).round().byte().numpy()
        assert np.abs(got[j].astype(int) - expected.astype(int)).max() <= 1
    assert facts["audio_spans"] == [pytest.approx(float(facts["video_span"]), abs=0.03)]


def test_fixed_factor_models_refuse_other_rates(tmp_path):
    src = tmp_path / "clip.mp4"
    make_video(src, frames=8, size=(32, 24))
    result = CliRunner().invoke(
        main, ["upscale", str(src), str(tmp_path / "o.mp4"), "--model", "zsm-lite-cpu", "--fps", "60"]
    )
    assert result.exit_code == 2 and "makes 2 times the frame rate, not 25 -> 60 fps" in result.output
    both = CliRunner().invoke(main, ["upscale", str(src), str(tmp_path / "o.mp4"), "--fps", "60", "--fps-x", "3"])
    assert both.exit_code == 2 and "not both" in both.output
    ok = upscale(src, tmp_path / "o50.mp4", model="zsm-lite-cpu", fps=50, scene_detect=False)  # exactly 2x: fine
    assert ok.frames_out == 16 and ok.rate_out == 50
    three = upscale(src, tmp_path / "o3.mp4", fps_x=3)
    assert three.frames_out == 24 and three.rate_out == 75


def test_film_rate_to_exactly_sixty(tmp_path):
    """24000/1001 -> 60: 48 frames last 2.002 s, so 120 frames (the nearest whole number, 2.000 s)
    at exactly j/60 s; the audio is copied untouched."""
    src, out = tmp_path / "film.mp4", tmp_path / "out.mp4"
    make_video(src, frames=48, rate=Fraction(24000, 1001), audio=True)
    result = upscale(src, out, scale=1, fps=60, scene_detect=False)
    facts = stream_facts(out)
    assert result.frames_out == facts["frames"] == 120 and facts["rate"] == 60
    assert facts["times"] == [Fraction(j, 60) for j in range(120)]
    assert facts["audio_spans"] == stream_facts(src)["audio_spans"]
