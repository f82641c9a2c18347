"""Long runs survive: segments in a work folder, resume after SIGKILL or Ctrl-C, OOM falls back to tiles."""

import itertools
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from media import make_video, read_frames, stream_facts

from stvsr_cli import upscale
from stvsr_cli.cli import main
from stvsr_cli.io.encode import EncodeSettings
from stvsr_cli.io.workdir import work_folder_for
from stvsr_cli.models import loader
from stvsr_cli.models.registry import load_registry
from stvsr_cli.pipeline.tiles import min_tile

OPTIONS = {"model": "classic", "scale": 2, "fps_x": 2, "scene_detect": False, "segment_frames": 20}
# classic on the CPU runs on arrays, without a network: the tests of the tensor runner's fallbacks
# load the smallest learned model instead, or a stand-in for it.
TENSOR_MODEL = "stvun"
CLI_OPTIONS = ["--model", "classic", "--scale", "2", "--fps-x", "2", "--no-scene-detect", "--segment-frames", "20"]


def segments_done(out) -> int:
    try:
        return len(json.loads((work_folder_for(out) / "manifest.json").read_text())["segments"])
    except (OSError, ValueError):
        return 0


def interrupt_after(frames: int):
    """A progress callback that presses Ctrl-C once ``frames`` output frames are done."""

    def progress(done, total):
        if done >= frames:
            raise KeyboardInterrupt

    return progress


@pytest.fixture()
def clip(tmp_path):
    path = tmp_path / "clip.mp4"
    make_video(path, frames=60, size=(32, 24), audio=True)
    return path


def test_segments_join_into_one_exact_stream(clip, tmp_path):
    out = tmp_path / "out.mp4"
    result = upscale(clip, out, **OPTIONS)
    assert result.frames_out == 120 and not work_folder_for(out).exists()  # the work folder goes at the end
    facts = stream_facts(out)
    assert facts["frames"] == 120 and facts["times"] == [j / facts["rate"] for j in range(120)]
    assert 4 <= result.segments <= 6  # of at least 20 frames, closed at the next window boundary
    assert facts["keyframes"] == result.segments  # each segment starts with one; no others in 20 frames
    assert facts["audio_spans"] == [pytest.approx(float(facts["video_span"]), abs=0.03)]


def test_killed_run_resumes_with_the_same_frames(clip, tmp_path):
    # Lossless, to compare pixels exactly: x264 in this FFmpeg build is not bit-reproducible from
    # one encoder instance to the next, even for two uninterrupted runs (see benchmarks/README.md).
    reference, out = tmp_path / "reference.mkv", tmp_path / "out.mkv"
    long_clip = tmp_path / "long.mp4"
    make_video(long_clip, frames=400, size=(32, 24), audio=True)
    upscale(long_clip, reference, encode=EncodeSettings(codec="ffv1", pix_fmt="bgr0"), **OPTIONS)
    lossless = ["--codec", "ffv1", "--pix-fmt", "bgr0"]
    process = subprocess.Popen(
        [sys.executable, "-m", "stvsr_cli", "upscale", str(long_clip), str(out), *CLI_OPTIONS, *lossless, "-q"],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while segments_done(out) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)  # no clean-up at all, as in a power cut
    process.wait()
    kept = segments_done(out)
    assert kept >= 3 and not out.exists()

    result = CliRunner().invoke(main, ["upscale", str(long_clip), str(out), *CLI_OPTIONS, *lossless])
    assert result.exit_code == 0, result.output
    assert f"resuming: {kept} finished segment(s)" in result.output
    got, expected = read_frames(out), read_frames(reference)
    assert len(got) == len(expected) == 800
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    assert stream_facts(out)["audio_spans"] == stream_facts(reference)["audio_spans"]
    assert not work_folder_for(out).exists()


def test_a_slow_run_closes_a_segment_about_every_minute_so_a_kill_loses_little(tmp_path):
    """At a few frames/s --segment-frames (480) take minutes to fill: a segment also closes after
    about 60 s of work, so a run stopped at 60 % resumes near there instead of from zero."""
    src = tmp_path / "clip.mkv"
    make_video(src, frames=60, size=(32, 24), codec="ffv1", pix_fmt="bgr0")
    options = {**OPTIONS, "segment_frames": 480, "window": 3, "encode": EncodeSettings(codec="ffv1", pix_fmt="bgr0")}
    reference = tmp_path / "reference.mkv"
    upscale(src, reference, **options)
    clock = itertools.count(step=20.0).__next__  # every look at the clock finds 20 s more work: 3 windows a minute
    out = tmp_path / "out.mkv"
    with pytest.raises(KeyboardInterrupt, match="finished segment"):
        upscale(src, out, progress=interrupt_after(72), clock=clock, **options)  # 60 % of 120 frames
    manifest = json.loads((work_folder_for(out) / "manifest.json").read_text())
    kept = sum(s["frames"] for s in manifest["segments"])
    assert 72 - 12 <= kept <= 72  # at most the 3 windows (4 frames each) since the last minute's segment are lost
    redone = []
    result = upscale(src, out, progress=lambda done, total: redone.append(done), clock=clock, **options)
    assert len(redone) == 120 - kept  # the second run makes only the frames the first did not keep
    assert result.frames_out == 120 and not work_folder_for(out).exists()
    got, expected = read_frames(out), read_frames(reference)
    assert len(got) == len(expected) == 120
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_ctrl_c_keeps_finished_segments_and_says_how_to_resume(clip, tmp_path):
    out = tmp_path / "out.mkv"
    result = CliRunner().invoke(main, ["upscale", str(clip), str(out), *CLI_OPTIONS])  # warm-up: nothing special
    assert result.exit_code == 0
    out.unlink()
    with pytest.raises(KeyboardInterrupt, match="finished segment.* run the same command again to resume"):
        upscale(clip, out, progress=interrupt_after(70), **OPTIONS)
    manifest = json.loads((work_folder_for(out) / "manifest.json").read_text())
    kept, frames = len(manifest["segments"]), sum(s["frames"] for s in manifest["segments"])
    assert not out.exists() and kept >= 2 and 40 <= frames <= 70
    notes = []
    resumed = upscale(clip, out, on_note=notes.append, **OPTIONS)
    assert notes == [f"resuming: {kept} finished segment(s), {frames} frames, kept from the interrupted run"]
    assert resumed.frames_out == 120 and len(read_frames(out)) == 120


def test_changed_options_or_restart_start_afresh(clip, tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(KeyboardInterrupt):
        upscale(clip, out, progress=interrupt_after(50), **OPTIONS)
    notes = []
    with pytest.raises(KeyboardInterrupt):
        upscale(clip, out, progress=interrupt_after(30), on_note=notes.append, encode=EncodeSettings(crf=30), **OPTIONS)
    assert notes == ["the options changed since the interrupted run: starting afresh"]
    assert segments_done(out) == 1  # the new run's own
    notes.clear()
    upscale(clip, out, restart=True, on_note=notes.append, encode=EncodeSettings(crf=30), **OPTIONS)
    assert notes == ["--restart: discarded the earlier run's segments"]
    assert len(read_frames(out)) == 120


def test_changed_input_starts_afresh(clip, tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(KeyboardInterrupt):
        upscale(clip, out, progress=interrupt_after(50), **OPTIONS)
    make_video(clip, frames=60, size=(32, 24), content=lambda i, h, w: np.full((h, w, 3), 3 * i, np.uint8))
    notes = []
    upscale(clip, out, on_note=notes.append, **OPTIONS)
    assert notes == ["the input changed since the interrupted run: starting afresh"]


def test_out_of_memory_falls_back_to_tiles(tmp_path, monkeypatch):
    """The real model on a device that only fits its smallest tile: whole frames, then half-frame
    tiles run out of memory; the smallest tiles work and give what a run tiled so from the start gives."""
    spec = load_registry().get(TENSOR_MODEL)
    smallest = min_tile(spec.context, 4)  # stvun's size rule is 4
    src = tmp_path / "wide.mkv"
    make_video(src, frames=4, size=(2 * smallest + 8, 16), codec="ffv1", pix_fmt="bgr0")  # no memory probe
    real_load = loader.load_model
    calls = []

    class SmallDevice:
        """The real model on a device that only fits frames ``smallest`` pixels wide."""

        def __init__(self, inner):
            self.inner, self.device, self.spec, self.scale, self.half = inner, inner.device, inner.spec, inner.scale, False
            self.arbitrary_times, self.size_multiple = inner.arbitrary_times, inner.size_multiple
            self.shot_edges, self.pad_mode, self.exact_tiles = inner.shot_edges, inner.pad_mode, inner.exact_tiles

        def __call__(self, frames, fps_x, **times):
            calls.append(tuple(frames.shape[-2:]))
            if frames.shape[-1] > smallest:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return self.inner(frames, fps_x, **times)

    monkeypatch.setattr(loader, "load_model", lambda *a, **k: SmallDevice(real_load(*a, **k)))
    lossless = EncodeSettings(codec="ffv1", pix_fmt="bgr0")
    options = {**OPTIONS, "model": TENSOR_MODEL, "scale": 4}
    result = upscale(src, tmp_path / "out.mkv", encode=lossless, **options)
    half = smallest + 4
    assert f"out of memory on cpu: tiling at {half} px" in result.warnings
    assert f"out of memory on cpu: tiling at {smallest} px (was {half} px)" in result.warnings
    widths = [w for _, w in calls]
    assert widths[:2] == [2 * smallest + 8, half] and max(widths[2:]) <= smallest  # whole, half, smallest
    tiled = upscale(src, tmp_path / "tiled.mkv", encode=lossless, tile=smallest, **options)
    for a, b in zip(read_frames(tmp_path / "out.mkv"), read_frames(tmp_path / "tiled.mkv")):
        np.testing.assert_array_equal(a, b)
    assert tiled.frames_out == result.frames_out == 8


def test_out_of_memory_even_on_the_smallest_tile_fails_cleanly(tmp_path, monkeypatch):
    src = tmp_path / "clip.mp4"
    make_video(src, frames=3, size=(64, 48))

    class NoMemory:
        device = torch.device("cpu")
        arbitrary_times, shot_edges, size_multiple, exact_tiles = False, False, 1, True
        spec, scale, half = load_registry().get("classic"), 4, False

        def __call__(self, frames, fps_x):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(loader, "load_model", lambda *a, **k: NoMemory())
    options = ["--model", TENSOR_MODEL, "--scale", "4", *CLI_OPTIONS[4:]]
    result = CliRunner().invoke(main, ["upscale", str(src), str(tmp_path / "out.mp4"), *options])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "out of memory" in result.output.lower() and "32 px" in result.output
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4"]


def test_unwritable_output_folder(clip):
    try:
        os.mkdir("/sys/stvsr-test")
    except OSError:
        pass
    else:
        os.rmdir("/sys/stvsr-test")
        pytest.skip("/sys is writable here")
    result = CliRunner().invoke(main, ["upscale", str(clip), "/sys/out.mp4", *CLI_OPTIONS])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "cannot write in '/sys'" in result.output


def test_full_disk_at_the_join_keeps_every_segment(clip, tmp_path):
    """Segments fit the (simulated) disk but the joined file does not: nothing at OUT, every segment
    kept and none half-written; the next run, with space again, only joins."""
    import resource

    out = tmp_path / "out.mkv"
    lossless = ["--codec", "ffv1", "--pix-fmt", "bgr0"]

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write() instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000))

    failed = subprocess.run(
        [sys.executable, "-m", "stvsr_cli", "upscale", str(clip), str(out), *CLI_OPTIONS, *lossless],
        capture_output=True, text=True, preexec_fn=limit,
    )  # fmt: skip
    assert failed.returncode == 1, failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("stvsr: error: no space left on the disk of") and "segment(s) are kept" in last
    assert not out.exists() and not list(tmp_path.glob(".out*partial*"))
    work = work_folder_for(out)
    manifest = json.loads((work / "manifest.json").read_text())
    assert sum(s["frames"] for s in manifest["segments"]) == 120  # all made before the join ran out of room
    assert sorted(p.name for p in work.iterdir()) == sorted(
        [s["file"] for s in manifest["segments"]] + ["manifest.json"]
    )
    result = CliRunner().invoke(main, ["upscale", str(clip), str(out), *CLI_OPTIONS, *lossless])
    assert result.exit_code == 0 and "resuming" in result.output
    assert len(read_frames(out)) == 120 and not work.exists()


def test_a_resumed_run_reuses_the_scene_cuts_it_found(tmp_path):
    from test_footage import two_shots

    src, out = tmp_path / "cut.mkv", tmp_path / "out.mkv"
    make_video(
        src,
        frames=40,
        size=(32, 24),
        codec="ffv1",
        pix_fmt="bgr0",
        content=lambda i, h, w: two_shots(0 if i < 24 else 10, h, w),
    )
    options = {**OPTIONS, "scene_detect": True}
    scans = []
    with pytest.raises(KeyboardInterrupt):
        upscale(src, out, progress=interrupt_after(50), scan_progress=lambda *a: scans.append(a), **options)
    assert scans and segments_done(out) >= 1
    manifest = json.loads((work_folder_for(out) / "manifest.json").read_text())
    assert manifest["cuts"] == [24] and manifest["grey_shots"] == []  # what the scan found, kept
    scans.clear()
    result = upscale(src, out, scan_progress=lambda *a: scans.append(a), **options)
    assert scans == [] and result.cuts == [24] and result.grey_shots == []  # not scanned again
