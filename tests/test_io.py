from fractions import Fraction

import numpy as np
import pytest
from media import make_video

from stvsr_cli.io.decode import VideoReader, probe


def read_all(info):
    with VideoReader(info, queue_size=2) as reader:
        return list(reader.frames())


def test_probe_reports_exact_metadata(tmp_path):
    path = tmp_path / "ntsc.mp4"
    make_video(path, frames=12, rate=Fraction(24000, 1001), audio=True, size=(48, 32), sar=Fraction(4, 3))
    info = probe(path)
    assert info.frame_rate == Fraction(24000, 1001) and isinstance(info.frame_rate, Fraction)
    assert (info.frame_count, info.source_frame_count) == (12, 12)
    assert info.duration == Fraction(12 * 1001, 24000)
    assert (info.width, info.height, info.pix_fmt, info.bit_depth) == (48, 32, "yuv420p", 8)
    assert info.sample_aspect_ratio == Fraction(4, 3)
    assert info.audio_streams == 1 and info.rotation == 0 and not info.variable_frame_rate
    assert info.start_time == 0 and info.codec == "h264"


def test_probe_reads_rotation_depth_and_colour(tmp_path):
    rotated, deep, tagged = tmp_path / "r.mp4", tmp_path / "d.mp4", tmp_path / "c.mp4"
    make_video(rotated, rotation=90)
    make_video(deep, pix_fmt="yuv420p10le")
    make_video(tagged, colorspace=1)
    assert probe(rotated).rotation == 90
    info = probe(deep)
    assert (info.pix_fmt, info.bit_depth) == ("yuv420p10le", 10)
    assert probe(tagged).colour.matrix == 1  # BT.709 as tagged
    assert probe(deep).colour.matrix == 6  # untagged small video: read as BT.601, like players do


def test_reader_yields_the_exact_frames_of_a_lossless_clip(tmp_path):
    path = tmp_path / "lossless.mkv"
    frames = make_video(path, frames=7, codec="ffv1", pix_fmt="bgr0", size=(19, 13))
    got = read_all(probe(path))
    assert len(got) == 7
    for a, b in zip(got, frames):
        np.testing.assert_array_equal(a, b)


def test_ten_bit_frames_come_out_as_sixteen_bit_arrays(tmp_path):
    path = tmp_path / "deep.mkv"
    make_video(path, frames=3, codec="ffv1", pix_fmt="yuv420p10le")
    got = read_all(probe(path))
    assert got[0].dtype == np.uint16 and got[0].shape == (24, 32, 3)
    assert len(np.unique(got[0] % 64)) > 1  # finer steps than 8 bits


def test_variable_frame_rate_is_resampled_by_time(tmp_path):
    path = tmp_path / "vfr.mkv"
    ms = [0, 40, 120, 160, 200, 320]
    frames = make_video(path, frames=6, rate=25, codec="ffv1", pix_fmt="bgr0", times=[Fraction(t, 1000) for t in ms])
    info = probe(path)
    assert info.variable_frame_rate and info.frame_rate == 25
    assert (info.frame_count, info.source_frame_count) == (9, 6)
    got = read_all(info)
    # 40 ms grid: 0 40 80 120 160 200 240 280 320 -> nearest source frames (80: tie, earlier)
    for grid_frame, source in zip(got, [0, 1, 1, 2, 3, 4, 4, 5, 5]):
        np.testing.assert_array_equal(grid_frame, frames[source])


def test_trimmed_probe_covers_only_the_piece(tmp_path):
    path = tmp_path / "long.mkv"
    frames = make_video(path, frames=20, rate=10, codec="ffv1", pix_fmt="bgr0")
    info = probe(path, start=Fraction(1, 2), duration=Fraction(1))
    assert info.frame_count == 10 and info.start_time == Fraction(1, 2)
    got = read_all(info)
    assert len(got) == 10
    np.testing.assert_array_equal(got[0], frames[5])
    np.testing.assert_array_equal(got[-1], frames[14])


def test_reader_stops_its_thread_when_abandoned(tmp_path):
    path = tmp_path / "clip.mkv"
    make_video(path, frames=30, codec="ffv1", pix_fmt="bgr0")
    reader = VideoReader(probe(path), queue_size=1)
    iterator = reader.frames()
    next(iterator)
    reader.close()
    assert reader._thread is None


@pytest.mark.parametrize("rate", [Fraction(30000, 1001), Fraction(24000, 1001), Fraction(50)])
def test_matroska_millisecond_timestamps_keep_the_exact_rate(tmp_path, rate):
    path = tmp_path / "ms.mkv"
    make_video(path, frames=30, rate=rate, codec="ffv1")
    info = probe(path)
    assert info.frame_rate == rate and info.frame_count == 30 and not info.variable_frame_rate


@pytest.mark.parametrize("first", [1, 9, 10, 17, 29])
def test_reader_started_at_a_frame_gives_the_frames_a_full_decode_gives(tmp_path, first):
    path = tmp_path / "gop.mp4"
    make_video(path, frames=30, size=(32, 24), options={"g": "10", "bf": "2"})  # keyframes every 10 frames
    info = probe(path)
    with VideoReader(info) as reader:
        everything = list(reader.frames())
    with VideoReader(info, first_frame=first) as reader:
        part = list(reader.frames())
    assert len(part) == 30 - first
    for a, b in zip(part, everything[first:]):
        np.testing.assert_array_equal(a, b)


def test_reader_refuses_to_seek_where_it_would_not_be_exact(tmp_path):
    path = tmp_path / "vfr.mkv"
    make_video(path, frames=4, times=[Fraction(t, 1000) for t in (0, 40, 120, 160)])
    with pytest.raises(ValueError, match="constant-rate"):
        VideoReader(probe(path), first_frame=2)
