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


def assert_clean_failure(result, code, message, folder, inputs=()):
    """Exit code, one stderr line without a traceback, and nothing written into the folder."""
    assert result.exit_code == code, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("stvsr: error: ") and message in lines[-1], result.stderr
    assert "Traceback" not in result.stderr
    leftovers = [p.name for p in folder.iterdir() if "partial" in p.name or p.name.startswith("out")]
    assert leftovers == []
    for path, before in inputs:
        assert digest(path) == before  # the input is never modified


def test_missing_input(tmp_path):
    result = run_cli(tmp_path / "nope.mp4", tmp_path / "out.mp4")
    assert_clean_failure(result, 1, "not found", tmp_path)


def test_folder_as_input(tmp_path):
    (tmp_path / "dir.mp4").mkdir()
    assert_clean_failure(run_cli(tmp_path / "dir.mp4", tmp_path / "out.mp4"), 1, "is a folder", tmp_path)


def test_not_a_video(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    before = digest(text)
    result = run_cli(text, tmp_path / "out.mp4")
    assert_clean_failure(result, 1, "is not a video file", tmp_path, [(text, before)])


def test_audio_only_file(tmp_path):
    song = tmp_path / "song.m4a"
    make_audio_only(song)
    result = run_cli(song, tmp_path / "out.mp4")
    assert_clean_failure(result, 1, "has no video stream", tmp_path, [(song, digest(song))])


def test_truncated_files(tmp_path):
    for name, options in (("plain.mp4", None), ("fast.mp4", {"movflags": "faststart"}), ("cut.mkv", None)):
        whole = tmp_path / f"whole-{name}"
        make_video(whole, frames=30, audio=True, container_options=options)
        data = whole.read_bytes()
        cut = tmp_path / name
        cut.write_bytes(data[: len(data) // 2])
        result = run_cli(cut, tmp_path / "out.mp4")
        assert result.exit_code == 1, (name, result.stderr)
        assert ("truncated" in result.stderr) or ("corrupt" in result.stderr), result.stderr
        assert_clean_failure(result, 1, str(cut), tmp_path, [(cut, digest(cut))])


def test_corrupt_stream_fails_while_decoding(tmp_path):
    good = tmp_path / "good.mkv"
    make_video(good, frames=30, codec="ffv1", pix_fmt="bgr0", options={"slicecrc": "1"})
    data = bytearray(good.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 200] = bytes(b ^ 0x5A for b in data[middle : middle + 200])
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(bytes(data))
    result = run_cli(bad, tmp_path / "out.mkv")
    assert_clean_failure(result, 1, "is corrupt", tmp_path, [(bad, digest(bad))])


def test_output_is_the_input(tmp_path, clip, monkeypatch):
    before = digest(clip)
    monkeypatch.chdir(tmp_path)
    result = run_cli(clip, "./clip.mp4")
    assert result.exit_code == 2 and "is the input file" in result.stderr
    assert digest(clip) == before


def test_existing_output_needs_overwrite(tmp_path, clip):
    out = tmp_path / "done.mp4"
    out.write_bytes(b"precious")
    result = run_cli(clip, out)
    assert result.exit_code == 1 and "already exists" in result.stderr and "--overwrite" in result.stderr
    assert out.read_bytes() == b"precious"
    assert run_cli(clip, out, "--overwrite").exit_code == 0
    assert out.read_bytes() != b"precious" and out.stat().st_size > 1000


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "nope"], "unknown model 'nope'"),
        (["--window", "4", "--overlap", "4"], "--overlap must be between 1 and 3"),
        (["--model", "fixed4", "--scale", "2"], "does not support --scale 2"),
        (["--model", "fixed4", "--fps-x", "3"], "does not support --fps-x 3"),
        (["--device", "cuda:0"] if not __import__("torch").cuda.is_available() else ["--device", "tpu"], "device"),
        (["--codec", "nosuchcodec"], "unknown video encoder"),
        (["--pix-fmt", "nosuchformat"], "cannot encode pixel format"),
        (["--codec", "ffv1", "--crf", "20"], "has no --crf"),
        (["--start", "5"], "no video frames in the requested piece"),
    ],
)
def test_options_the_model_or_encoder_cannot_do(tmp_path, clip, args, message):
    registry = tmp_path / "fixed.toml"
    registry.write_text('[models.fixed4]\narch = "classic"\nscale = 4\nfps_x = 2\n')
    result = run_cli(clip, tmp_path / "out.mp4", *args, env={"STVSR_REGISTRY": str(registry)})
    assert result.exit_code in (1, 2)
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("stvsr: error:") == 1
    assert not any("partial" in p.name or p.name == "out.mp4" for p in tmp_path.iterdir())


def test_usage_errors_exit_2(tmp_path, clip):
    assert run_cli(clip, tmp_path / "out.mp4", "--model", "nope").exit_code == 2
    assert run_cli(clip, tmp_path / "out.mp4", "--window", "1").exit_code == 2  # click's range check
    assert run_cli(clip, tmp_path / "out.mp4", "--start", "soon").exit_code == 2
    assert run_cli(clip, tmp_path / "out.xyz").exit_code == 2


def test_missing_output_folder(tmp_path, clip):
    result = run_cli(clip, tmp_path / "no" / "such" / "out.mp4")
    assert result.exit_code == 1 and "does not exist" in result.stderr


def test_json_summary_on_failure(tmp_path):
    result = run_cli(tmp_path / "nope.mp4", tmp_path / "out.mp4", "--json")
    data = json.loads(result.stdout)
    assert data["exit_code"] == 1 and "not found" in data["error"] and data["input"].endswith("nope.mp4")


def test_interrupt_removes_the_partial_output(tmp_path, clip, monkeypatch):
    import stvsr_cli.api as api

    def interrupted(frames, plan, model, emit, progress=None, **_):
        for i, frame in enumerate(frames):
            emit(frame.repeat(4, axis=0).repeat(4, axis=1))
            if i == 3:
                raise KeyboardInterrupt  # as Ctrl-C does, in the middle of the run

    monkeypatch.setattr(api, "run_windows", interrupted)
    result = run_cli(clip, tmp_path / "out.mp4")
    assert result.exit_code == 130 and "interrupted" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_debug_shows_the_traceback(tmp_path):
    result = CliRunner().invoke(main, ["--debug", "upscale", str(tmp_path / "nope.mp4"), str(tmp_path / "o.mp4")])
    assert result.exit_code == 1 and "Traceback" in result.stderr


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


def test_full_disk_fails_cleanly(tmp_path):
    src = tmp_path / "big.mkv"
    make_video(src, frames=12, codec="ffv1", pix_fmt="bgr0", size=(64, 48))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "stvsr_cli", "upscale", str(src), str(out_dir / "out.mkv"), "--codec", "ffv1"],
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert result.returncode == 1, result.stderr
    assert "no space left" in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("stvsr: error:")
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
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert list(out_dir.iterdir()) == []
