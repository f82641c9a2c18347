"""stvsr batch: a tree of tiny clips with a broken file and a text file."""

import json
import os

import pytest
from click.testing import CliRunner
from media import make_video, stream_facts

from stvsr_cli.batch import find_inputs, plan_batch, run_batch, shard
from stvsr_cli.cli import main
from stvsr_cli.options import UpscaleOptions

FAST = ["--model", "classic", "--scale", "2", "--fps-x", "2", "--no-scene-detect"]


@pytest.fixture()
def tree(tmp_path):
    root = tmp_path / "in"
    (root / "sub" / "deeper").mkdir(parents=True)
    make_video(root / "a.mp4", frames=4)
    make_video(root / "sub" / "b.mkv", frames=3, audio=True)
    make_video(root / "sub" / "deeper" / "c.MP4", frames=5)
    (root / "broken.mp4").write_text("this is not a video")
    (root / "notes.txt").write_text("shot list")
    (root / ".hidden.mp4").write_text("editor swap file")
    return root


def batch(*args):
    return CliRunner().invoke(main, ["batch", *map(str, args)])


def test_batch_mirrors_the_tree_reports_and_carries_on_past_a_broken_file(tree, tmp_path):
    out, report = tmp_path / "out", tmp_path / "report.json"
    result = batch(tree, out, *FAST, "--report", report)
    assert result.exit_code == 1, result.output  # one file failed
    assert "broken.mp4" in result.output and "3 done, 0 skipped, 1 failed (1 non-video files ignored)" in result.output
    for name, frames in (("a.mp4", 8), ("sub/b.mkv", 6), ("sub/deeper/c.MP4", 10)):
        facts = stream_facts(out / name)
        assert facts["frames"] == frames and (facts["width"], facts["height"]) == (64, 48)
    assert stream_facts(out / "sub/b.mkv")["audio_codecs"] == ["aac"]
    assert not (out / "broken.mp4").exists() and not (out / "notes.txt").exists()
    assert sorted(os.listdir(out)) == ["a.mp4", "sub"]  # nothing partial left behind

    data = json.loads(report.read_text())
    by_input = {os.path.relpath(f["input"], tree): f for f in data["files"]}
    assert set(by_input) == {"a.mp4", "broken.mp4", "sub/b.mkv", "sub/deeper/c.MP4"}
    assert by_input["broken.mp4"]["status"] == "failed" and "not a video" in by_input["broken.mp4"]["error"]
    assert by_input["a.mp4"]["status"] == "done" and by_input["a.mp4"]["frames"] == 8
    assert by_input["a.mp4"]["output"] == str(out / "a.mp4") and by_input["a.mp4"]["seconds"] > 0
    summary = data["summary"]
    assert (summary["done"], summary["skipped"], summary["failed"], summary["ignored_not_videos"]) == (3, 0, 1, 1)

    # A re-run does no finished work again.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = batch(tree, out, *FAST, "--report", report)
    assert again.exit_code == 1
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps
    statuses = sorted(f["status"] for f in json.loads(report.read_text())["files"])
    assert statuses == ["failed", "skipped", "skipped", "skipped"]


def test_all_done_exits_zero_and_ext_changes_the_container(tree, tmp_path):
    (tree / "broken.mp4").unlink()
    out = tmp_path / "out"
    result = batch(tree, out, *FAST, "--ext", "mkv", "--pattern", "*.mp4", "-q")
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mkv")) == ["a.mkv", "sub/deeper/c.mkv"]


def test_shards_partition_the_files_exactly(tree, tmp_path):
    files, ignored = find_inputs(tree)
    assert files == ["a.mp4", "broken.mp4", "sub/b.mkv", "sub/deeper/c.MP4"] and ignored == 1
    for n in (1, 2, 3, 5):
        parts = [shard(files, k, n) for k in range(1, n + 1)]
        assert sorted(f for part in parts for f in part) == files
        assert sum(map(len, parts)) == len(files)
    planned = [f.relative for k in (1, 2) for f in plan_batch(tree, tmp_path / "o", shard_spec=(k, 2)).files]
    assert sorted(planned) == files
    out = tmp_path / "out"
    result = batch(tree, out, *FAST, "--shard", "1/2", "-q")
    assert result.exit_code == 0, result.output
    assert (
        sorted(p.relative_to(out).as_posix() for p in out.rglob("*.*")) == shard(files, 1, 2) == ["a.mp4", "sub/b.mkv"]
    )


def test_output_folder_inside_the_input_is_not_walked(tree):
    out = tree / "upscaled"
    assert batch(tree, out, *FAST, "-q", "--pattern", "a.mp4").exit_code == 0
    assert find_inputs(tree, exclude=out)[0] == ["a.mp4", "broken.mp4", "sub/b.mkv", "sub/deeper/c.MP4"]


@pytest.mark.parametrize("args, message", [(["--shard", "3/2"], "between 1 and N"), (["--shard", "x"], "K/N")])
def test_bad_batch_options(tree, tmp_path, args, message):
    result = batch(tree, tmp_path / "out", *FAST, *args)
    assert result.exit_code == 2 and message in result.output


def test_missing_input_folder(tmp_path):
    result = batch(tmp_path / "nowhere", tmp_path / "out", *FAST)
    assert result.exit_code == 2 and "not found" in result.output


def test_jobs_run_every_file_in_worker_processes_and_report_in_plan_order(tree, tmp_path):
    """Results and start events with --jobs 2; that files really run at once: test_batch_parallel.py."""
    plan = plan_batch(tree, tmp_path / "out")
    options = UpscaleOptions(model="classic", scale=2, fps_x=2, scene_detect=False)
    started = []
    results = run_batch(plan, options, jobs=2, on_start=lambda item: started.append(item.relative))
    assert [r.status for r in results] == ["done", "failed", "done", "done"]
    assert sorted(started) == [f.relative for f in plan.files]
    assert stream_facts(tmp_path / "out" / "sub/deeper/c.MP4")["frames"] == 10


def test_ray_runs_the_same_batch(tree, tmp_path):
    pytest.importorskip("ray")
    out, report = tmp_path / "out", tmp_path / "report.json"
    result = batch(tree, out, *FAST, "--ray", "--report", report, "-q")
    assert result.exit_code == 1, result.output
    files = {os.path.relpath(f["input"], tree): f["status"] for f in json.loads(report.read_text())["files"]}
    assert files == {"a.mp4": "done", "broken.mp4": "failed", "sub/b.mkv": "done", "sub/deeper/c.MP4": "done"}
    assert stream_facts(out / "sub/b.mkv")["frames"] == 6
