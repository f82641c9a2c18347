"""Bad input and failures: one line on stderr, the right exit code, no output, the input untouched."""

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from media import make_audio_only, make_video

from stvsr_cli.cli import main


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def run_cli(*args, env=None):
    return CliRunner(env=env).invoke(main, ["upscale", *map(str, args)])


def assert_error_line(stderr, message):
    """stderr's last line is ``stvsr: error: `` and ``message``, exactly, or, where ``message`` ends in
    ``...``, up to there (the rest is what varies: FFmpeg's reason, a list of choices); the only one."""
    last = stderr.strip().splitlines()[-1]
    expected = f"stvsr: error: {message}"
    if message.endswith("..."):
        assert last.startswith(expected[:-3]) and len(last) > len(expected) - 3, (last, expected)
    else:
        assert last == expected, (last, expected)
    assert stderr.count("stvsr: error:") == 1, stderr
    assert "Traceback" not in stderr


def assert_clean_failure(result, code, message, folder, inputs=()):
    """Exit ``code``, the one error line (``assert_error_line``), and nothing written into the folder."""
    assert result.exit_code == code, (result.exit_code, result.stderr)
    assert_error_line(result.stderr, message)
    leftovers = [p.name for p in folder.iterdir() if "partial" in p.name or p.name.startswith("out")]
    assert leftovers == []
    for path, before in inputs:
        assert digest(path) == before  # the input is never modified


def test_missing_input(tmp_path):
    result = run_cli(tmp_path / "nope.mp4", tmp_path / "out.mp4")
    assert_clean_failure(result, 1, f"input '{tmp_path / 'nope.mp4'}' not found", tmp_path)


def test_folder_as_input(tmp_path):
    (tmp_path / "dir.mp4").mkdir()
    result = run_cli(tmp_path / "dir.mp4", tmp_path / "out.mp4")
    assert_clean_failure(result, 1, f"input '{tmp_path / 'dir.mp4'}' is a folder, not a video file", tmp_path)


def test_not_a_video(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    before = digest(text)
    result = run_cli(text, tmp_path / "out.mp4")
    assert_clean_failure(result, 1, f"'{text}' is not a video file or is corrupt (...", tmp_path, [(text, before)])


def test_audio_only_file(tmp_path):
    song = tmp_path / "song.m4a"
    make_audio_only(song)
    result = run_cli(song, tmp_path / "out.mp4")
    message = f"'{song}' has no video stream (it has only audio streams)"
    assert_clean_failure(result, 1, message, tmp_path, [(song, digest(song))])


def test_truncated_files(tmp_path):
    """Each cut in half: 30 frames at 25 fps, 1.20 s (how many frames are left depends on the encoder)."""
    for name, options, says in (
        ("plain.mp4", None, "is not a video file or is corrupt (..."),  # its index (moov) was at the end
        ("fast.mp4", {"movflags": "faststart"}, "is truncated: its index lists 30 frames, the file holds ..."),
        ("cut.mkv", None, "is truncated: it declares 1.20 s, the file holds ..."),
    ):
        whole = tmp_path / f"whole-{name}"
        make_video(whole, frames=30, audio=True, container_options=options)
        data = whole.read_bytes()
        cut = tmp_path / name
        cut.write_bytes(data[: len(data) // 2])
        result = run_cli(cut, tmp_path / "out.mp4")
        assert_clean_failure(result, 1, f"'{cut}' {says}", tmp_path, [(cut, digest(cut))])


def test_corrupt_stream_fails_while_decoding(tmp_path):
    good = tmp_path / "good.mkv"
    make_video(good, frames=30, codec="ffv1", pix_fmt="bgr0", options={"slicecrc": "1"})
    data = bytearray(good.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 200] = bytes(b ^ 0x5A for b in data[middle : middle + 200])
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(bytes(data))
    result = run_cli(bad, tmp_path / "out.mkv")
    assert_clean_failure(result, 1, f"'{bad}' is corrupt: decoding failed near ...", tmp_path, [(bad, digest(bad))])


def test_output_is_the_input(tmp_path, clip, monkeypatch):
    before = digest(clip)
    monkeypatch.chdir(tmp_path)
    result = run_cli(clip, "./clip.mp4")
    assert_clean_failure(result, 2, "output 'clip.mp4' is the input file (choose another output path)", tmp_path)
    assert digest(clip) == before


def test_existing_output_needs_overwrite(tmp_path, clip):
    out = tmp_path / "done.mp4"
    out.write_bytes(b"precious")
    result = run_cli(clip, out)
    assert_clean_failure(result, 1, f"output '{out}' already exists (use --overwrite to replace it)", tmp_path)
    assert out.read_bytes() == b"precious"
    assert run_cli(clip, out, "--overwrite", "--model", "classic").exit_code == 0  # classic: instant
    assert out.read_bytes() != b"precious" and out.stat().st_size > 1000


USE_A_DEVICE = "(use auto, cpu, cuda or cuda:N)"


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["--model", "nope"], 2, "unknown model 'nope' (known models: ..."),
        (["--window", "4", "--overlap", "4"], 2, "--overlap must be between 1 and 3 (one less than the window)"),
        (["--model", "fixed4", "--scale", "2"], 2, "model 'fixed4' does not support --scale 2 (it supports 4)"),
        (["--model", "fixed4", "--fps-x", "3"], 2, "model 'fixed4' does not support --fps-x 3 (it supports 2)"),
        (["--device", "tpu"], 2, f"unknown device 'tpu' {USE_A_DEVICE}"),  # not a torch device
        (["--device", "meta"], 2, f"unsupported device 'meta' {USE_A_DEVICE}"),  # a torch device, not ours
        (["--codec", "nosuchcodec"], 2, "unknown video encoder 'nosuchcodec'"),
        (["--pix-fmt", "nosuchformat"], 2, "libx264 cannot encode pixel format 'nosuchformat' (it supports ..."),
        (["--codec", "ffv1", "--crf", "20"], 2, "ffv1 has no --crf setting"),
        (["--start", "5"], 1, "'{clip}' has no video frames in the requested piece (check --start/--duration)"),
    ],
)
def test_options_the_model_or_encoder_cannot_do(tmp_path, clip, args, code, message):
    registry = tmp_path / "fixed.toml"
    registry.write_text('[models.fixed4]\narch = "classic"\nscale = 4\nfps_x = 2\n')
    extra = [] if "--model" in args else ["--model", "classic"]  # classic: no weights to load, instant
    result = run_cli(clip, tmp_path / "out.mp4", *args, *extra, env={"STVSR_REGISTRY": str(registry)})
    assert_clean_failure(result, code, message.format(clip=clip), tmp_path)


@pytest.mark.parametrize("args", [["--pix-fmt", "nosuchformat"], ["--codec", "ffv1", "--crf", "20"]])
def test_encoder_options_are_refused_before_the_model_runs(tmp_path, clip, monkeypatch, args):
    """A learned model's first window can take minutes on a CPU: what the encoder cannot take is
    refused before it (the loop over windows is never entered)."""
    import stvsr_cli.api

    def never(*_args, **_kwargs):
        raise AssertionError("the model ran before the encoder options were checked")

    monkeypatch.setattr(stvsr_cli.api, "run_windows", never)
    result = run_cli(clip, tmp_path / ("out.mkv" if "ffv1" in args else "out.mp4"), *args, "--model", "stvun")
    assert result.exit_code == 2 and "AssertionError" not in result.stderr, result.stderr
    assert_clean_failure(result, 2, "libx264 cannot encode ..." if "--pix-fmt" in args else "ffv1 has no --crf setting", tmp_path)


@pytest.mark.parametrize(
    "available,count,device,message",
    [
        (False, 0, "cuda", "device 'cuda' requested but CUDA is not available (use --device cpu)"),
        (False, 0, "cuda:0", "device 'cuda:0' requested but CUDA is not available (use --device cpu)"),
        (True, 1, "cuda:1", "device 'cuda:1' does not exist (1 CUDA device)"),
        (True, 2, "cuda:2", "device 'cuda:2' does not exist (2 CUDA devices)"),
    ],
)
def test_a_cuda_device_that_is_not_there_exits_1(tmp_path, clip, monkeypatch, available, count, device, message):
    """A runtime error (``DeviceError``), not a usage error: the same command works where the GPU is.
    CUDA's presence is faked both ways, so every machine sees both messages."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    result = run_cli(clip, tmp_path / "out.mp4", "--device", device, "--model", "classic")
    assert_clean_failure(result, 1, message, tmp_path)


def test_usage_errors_exit_2(tmp_path, clip):
    """click's own checks say so in its usage format; ours in the one error line."""
    for args, says in (
        (["--window", "1"], "Error: Invalid value for '--window': 1 is not in the range x>=2."),
        (["--start", "soon"], "Error: Invalid value for '--start': 'soon' is not a time in seconds or [HH:]MM:SS"),
    ):
        result = run_cli(clip, tmp_path / "out.mp4", *args)
        assert result.exit_code == 2, (args, result.stderr)
        assert result.stderr.startswith("Usage: ") and result.stderr.strip().splitlines()[-1] == says
    result = run_cli(clip, tmp_path / "out.xyz", "--model", "classic")
    message = "unknown output format '.xyz' (use a video extension such as .mp4 or .mkv)"
    assert_clean_failure(result, 2, message, tmp_path)


def test_missing_output_folder(tmp_path, clip):
    result = run_cli(clip, tmp_path / "no" / "such" / "out.mp4")
    assert_clean_failure(result, 1, f"output folder '{tmp_path / 'no' / 'such'}' does not exist", tmp_path)


def test_json_summary_on_failure(tmp_path):
    result = run_cli(tmp_path / "nope.mp4", tmp_path / "out.mp4", "--json")
    data = json.loads(result.stdout)
    message = f"input '{tmp_path / 'nope.mp4'}' not found"
    assert data == {"input": str(tmp_path / "nope.mp4"), "output": str(tmp_path / "out.mp4"), "error": message,
                    "exit_code": 1}  # fmt: skip
    assert_clean_failure(result, 1, message, tmp_path)


def test_interrupt_removes_the_partial_output(tmp_path, clip, monkeypatch):
    import stvsr_cli.api as api

    def interrupted(frames, plan, model, emit, progress=None, **_):
        for i, frame in enumerate(frames):
            emit(frame.repeat(4, axis=0).repeat(4, axis=1))
            if i == 3:
                raise KeyboardInterrupt  # as Ctrl-C does, in the middle of the run

    monkeypatch.setattr(api, "run_windows", interrupted)
    result = run_cli(clip, tmp_path / "out.mp4")
    assert result.exit_code == 130, result.stderr
    assert_error_line(result.stderr, "interrupted; no output was written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_debug_shows_the_traceback(tmp_path):
    result = CliRunner().invoke(main, ["--debug", "upscale", str(tmp_path / "nope.mp4"), str(tmp_path / "o.mp4")])
    assert result.exit_code == 1 and result.stderr.startswith("Traceback (most recent call last):")
    lines = result.stderr.strip().splitlines()
    message = f"input '{tmp_path / 'nope.mp4'}' not found"
    assert lines[-2] == f"stvsr_cli.errors.InputError: {message}" and lines[-1] == f"stvsr: error: {message}"


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


def test_full_disk_fails_cleanly(tmp_path):
    src = tmp_path / "big.mkv"
    make_video(src, frames=12, codec="ffv1", pix_fmt="bgr0", size=(64, 48))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "stvsr_cli", "upscale", str(src), str(out_dir / "out.mkv"), "--codec", "ffv1"]
        + ["--model", "classic"],  # instant: the disk fills at once
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert result.returncode == 1, result.stderr
    message = f"no space left on the disk of '{out_dir / 'out.mkv'}' (free some space and run the same command again)"
    assert_error_line(result.stderr, message)
    assert list(out_dir.iterdir()) == []


def test_ctrl_c_stops_at_once_and_leaves_nothing(tmp_path):
    src = tmp_path / "long.mkv"
    make_video(src, frames=1500, codec="ffv1", size=(16, 16))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "stvsr_cli", "upscale", str(src), str(out_dir / "out.mp4"), "--model", "classic"]
        + ["--scale", "8"],  # classic: any scale
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not list(out_dir.iterdir()) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # wait until the partial output exists: the run is under way
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert_error_line(stderr, "interrupted; no output was written")
    assert list(out_dir.iterdir()) == []
