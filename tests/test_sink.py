import threading
import time

import av
import pytest
from media import make_video, read_frames

from stvsr_cli.io import encode
from stvsr_cli.io.decode import probe
from stvsr_cli.io.encode import EncodeSettings, choose_codec, encoder_opens
from stvsr_cli.pipeline.sink import ThreadedSink


def test_items_are_handled_in_order_in_another_thread():
    seen, threads = [], set()

    def handle(item):
        seen.append(item)
        threads.add(threading.current_thread().name)

    sink = ThreadedSink(handle, maxsize=2)
    for i in range(100):
        sink.put(i)
    sink.close()
    assert seen == list(range(100)) and threads == {"stvsr-encode"}


def test_the_queue_is_bounded_so_a_slow_worker_holds_back_the_producer():
    release = threading.Event()
    sink = ThreadedSink(lambda item: release.wait(), maxsize=2)
    started = time.monotonic()
    blocked = threading.Thread(target=lambda: [sink.put(i) for i in range(5)])
    blocked.start()
    blocked.join(timeout=0.3)
    assert blocked.is_alive()  # 1 in the worker + 2 queued: the 4th put waits
    release.set()
    blocked.join(timeout=5)
    sink.close()
    assert not blocked.is_alive() and time.monotonic() - started >= 0.3


def test_a_worker_error_reaches_the_caller():
    def handle(item):
        if item == 3:
            raise OSError(28, "No space left on device")

    sink = ThreadedSink(handle)
    with pytest.raises(OSError, match="No space"):
        for i in range(1000):
            sink.put(i)
        sink.close()


def test_abort_drops_the_queue():
    seen = []
    gate = threading.Event()
    sink = ThreadedSink(lambda item: (gate.wait(), seen.append(item)), maxsize=10)
    for i in range(5):
        sink.put(i)
    gate.set()
    sink.abort()
    assert len(seen) <= 2  # the item in hand may finish; the queued ones are dropped


def test_nvenc_is_chosen_only_where_it_opens_and_fits():
    plain = EncodeSettings()
    assert encoder_opens("libx264", "yuv420p")
    assert choose_codec(plain, "cpu", can_open=lambda *a: True) == plain  # the model on the CPU: x264
    assert choose_codec(plain, "cuda", can_open=lambda *a: True).codec == "h264_nvenc"
    assert choose_codec(plain, "cuda", can_open=lambda *a: False) == plain  # no driver: x264
    # No 10-bit H.264 NVENC: HEVC NVENC in p010 where it opens, else x264.
    deep = choose_codec(plain, "cuda", bit_depth=10, can_open=lambda *a: True)
    assert deep == (EncodeSettings("hevc_nvenc", pix_fmt="p010le") if "hevc_nvenc" in av.codecs_available else plain)
    assert choose_codec(plain, "cuda", bit_depth=10, can_open=lambda codec, fmt: fmt != "p010le") == plain
    asked = EncodeSettings(crf=20)
    assert choose_codec(asked, "cuda", can_open=lambda *a: True) == asked


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv444p"])
def test_a_pixel_format_asked_for_keeps_x264(pix_fmt):
    """The README: NVENC only when none of --codec, --crf, --preset, --pix-fmt is given."""
    asked = EncodeSettings(pix_fmt=pix_fmt)
    assert choose_codec(asked, "cuda", can_open=lambda *a: True) == asked


def test_by_default_nvenc_is_tried_for_real(monkeypatch):
    """Without ``can_open`` the encoder is opened here, and its answer decides."""
    tried = []
    monkeypatch.setattr(encode, "encoder_opens", lambda codec, pix_fmt: tried.append((codec, pix_fmt)) or False)
    assert choose_codec(EncodeSettings(), "cuda") == EncodeSettings()
    assert tried == ([("h264_nvenc", "yuv420p")] if "h264_nvenc" in av.codecs_available else [])
    monkeypatch.setattr(encode, "encoder_opens", lambda codec, pix_fmt: True)
    expected = "h264_nvenc" if "h264_nvenc" in av.codecs_available else None
    assert choose_codec(EncodeSettings(), "cuda").codec == expected


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_segments_of_two_frames_and_then_longer_ones_join(tmp_path, suffix):
    """x264 gives a 2-frame segment no reordering delay and a longer one its B-frame delay of 2: the
    joined decode times must still rise (they stepped back at the seam: 'Invalid argument', exit 1)."""
    src = tmp_path / "in.mkv"
    make_video(src, frames=12, size=(64, 48))
    info = probe(src)
    settings = choose_codec(EncodeSettings(), "cpu", 8)
    frames = read_frames(src)
    segments, first = [], 0
    for length in (2, 2, 8):
        encoder = encode.FrameEncoder(
            suffix.lstrip(".").replace("mkv", "matroska"), info, width=64, height=48, rate=info.frame_rate,
            settings=settings, first_frame=first,
        )  # fmt: skip
        packets = [p for frame in frames[first : first + length] for p in encoder.encode(frame)] + encoder.flush()
        segments.append(packets)
        first += length
    delays = [s[0].pts - s[0].dts for s in segments]
    assert delays[0] < delays[-1]  # the case: a short segment before a long one
    dst = tmp_path / f"out{suffix}"
    encode.join_segments(
        dst, info, segments, width=64, height=48, rate=info.frame_rate, settings=settings,
        delay=encode.reorder_delay(s[0] for s in segments),
    )  # fmt: skip
    with av.open(str(dst)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    dts = [p.dts for p in packets if p.dts is not None]  # Matroska keeps only some
    assert dts == sorted(dts) and len(set(dts)) == len(dts)
    assert all(p.dts <= p.pts for p in packets if p.dts is not None)
    assert len(read_frames(dst)) == 12


def test_why_an_encoder_does_not_open_is_one_line():
    """What the campaign records when NVENC does not open: FFmpeg's reason, one line, or None."""
    from stvsr_cli.io.encode import encoder_open_error

    assert encoder_open_error("libx264", "yuv420p") is None
    missing = encoder_open_error("no_such_encoder", "yuv420p")
    assert missing and "no_such_encoder" in missing and "\n" not in missing
    wrong_format = encoder_open_error("libx264", "rgb48le")  # x264 takes no 16-bit RGB
    assert wrong_format and "\n" not in wrong_format
    assert "rgb48le is not supported by the libx264 encoder" in wrong_format  # FFmpeg's own log line
    nvenc = encoder_open_error("h264_nvenc", "yuv420p")  # no NVIDIA driver or GPU on a CPU machine
    assert nvenc is None or ("\n" not in nvenc and nvenc.split(":")[0].endswith(("Error", "Exception")))
