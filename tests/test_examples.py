"""The shipped example clip and the batch script do what examples/README.md says."""

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

from media import make_video, stream_facts

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_example_clip_is_short_small_and_has_sound():
    facts = stream_facts(EXAMPLES / "vtest_200x150.mp4")
    assert (facts["width"], facts["height"]) == (200, 150)
    assert facts["video_span"] <= 3 and facts["rate"] == 25
    assert facts["audio_codecs"] == ["aac"] and abs(facts["audio_spans"][0] - facts["video_span"]) < Fraction(1, 10)


def test_batch_script_skips_done_files_and_reports_failures(tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    make_video(folder / "good.mp4", frames=4)
    (folder / "broken.mp4").write_text("not a video")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    first = subprocess.run(
        ["bash", str(EXAMPLES / "batch.sh"), str(folder), str(out), "--model", "classic", "--scale", "2"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert first.returncode == 1 and "FAILED" in first.stderr and "done" in first.stdout
    assert sorted(p.name for p in out.iterdir()) == ["good.mp4"]
    assert stream_facts(out / "good.mp4")["frames"] == 8
    again = subprocess.run(
        ["bash", str(EXAMPLES / "batch.sh"), str(folder), str(out)], capture_output=True, text=True, env=env
    )
    assert "skip" in again.stdout and "good.mp4" in again.stdout
