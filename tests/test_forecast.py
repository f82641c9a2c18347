"""--plan: what a run would do and how long it would take, from two timed windows; nothing written."""

import json
import os
import subprocess
import sys

from click.testing import CliRunner
from media import make_video

from stvsr_cli.cli import main
from stvsr_cli.forecast import duration_text, size_text


def test_times_and_sizes_read_as_people_say_them():
    assert [duration_text(s) for s in (42, 600, 3 * 3600 + 1200, 5 * 86400)] == ["42 s", "10 min", "3 h 20 min", "5.0 days"]
    assert [size_text(s) for s in (512, 16_400, 3_200_000)] == ["512 B", "16.4 KB", "3.2 MB"]


def test_the_plan_says_what_would_happen_and_writes_nothing(tmp_path):
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_video(src, frames=12, size=(48, 32), audio=True)
    result = CliRunner().invoke(main, ["upscale", str(src), str(dst), "-m", "classic", "--plan", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert (plan["frames_in"], plan["frames_out"], plan["out_width"], plan["out_height"]) == (12, 24, 192, 128)
    assert plan["rate_out"] == "50" and plan["codec"] == "libx264" and plan["cuts"] == []
    low, high = plan["predicted_seconds_range"]
    assert 0 < low <= plan["predicted_seconds"] <= high and plan["predicted_bytes"] > 0
    assert "predicted:" in result.stderr and "out.mp4: 192x128" in result.stderr
    assert not dst.exists() and not any(p.name.startswith(".out.mp4") for p in tmp_path.iterdir())


def test_a_batch_plan_sums_its_files(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4"):
        make_video(folder / name, frames=6, size=(32, 24))
    result = CliRunner().invoke(main, ["batch", str(folder), str(tmp_path / "out"), "-m", "classic", "--plan"])
    assert result.exit_code == 0, result.output
    assert result.output.count("predicted:") == 2 and "all 2 files:" in result.output
    assert not list((tmp_path / "out").glob("*.mp4"))


def test_the_prediction_is_within_a_factor_of_two_of_the_run(tmp_path):
    """A learned model on the CPU, each in its own process as a user runs them. The CPU time is
    compared (all threads, user + system): other work on the machine changes the wall time of one
    run and not the other's, the CPU time of neither."""
    src = tmp_path / "in.mp4"
    make_video(src, frames=24, size=(48, 32))
    command = [sys.executable, "-m", "stvsr_cli", "upscale", str(src), str(tmp_path / "out.mp4"), "-m", "stvun-film"]
    planned = json.loads(subprocess.run([*command, "--plan", "--json"], capture_output=True, text=True, check=True).stdout)
    process = subprocess.Popen([*command, "-q"])
    _, status, usage = os.wait4(process.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    actual = usage.ru_utime + usage.ru_stime
    print(f"predicted {planned['predicted_cpu_seconds']:.1f} s of CPU, took {actual:.1f} s")
    assert 0.5 <= planned["predicted_cpu_seconds"] / actual <= 2
