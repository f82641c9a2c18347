"""``stvsr batch --jobs 2`` runs two files at the same time: each worker, inside ``upscale``, waits
for the other file to start before it goes on; run one after the other, no file ever sees the other."""

import os

from click.testing import CliRunner
from media import make_video

from stvsr_cli.cli import main

# Loaded by every Python process started with this folder on PYTHONPATH (the batch's worker
# processes are spawned, so they inherit the environment but nothing patched in this process).
RENDEZVOUS_HOOK = """
import os, time

folder = os.environ.get("STVSR_TEST_RENDEZVOUS")
if folder:
    import stvsr_cli.api

    real_upscale = stvsr_cli.api.upscale

    def upscale(input, *args, **kwargs):
        name = os.path.basename(str(input))
        open(os.path.join(folder, name + ".started"), "w").close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if sum(f.endswith(".started") for f in os.listdir(folder)) >= 2:
                open(os.path.join(folder, name + ".met"), "w").close()  # the other file is running too
                break
            time.sleep(0.05)
        return real_upscale(input, *args, **kwargs)

    stvsr_cli.api.upscale = upscale
"""


def test_two_jobs_run_two_files_at_the_same_time(tmp_path, monkeypatch):
    hook, rendezvous, root = tmp_path / "hook", tmp_path / "rendezvous", tmp_path / "in"
    for folder in (hook, rendezvous, root):
        folder.mkdir()
    (hook / "sitecustomize.py").write_text(RENDEZVOUS_HOOK)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("STVSR_TEST_RENDEZVOUS", str(rendezvous))
    make_video(root / "a.mp4", frames=3)
    make_video(root / "b.mp4", frames=3)
    args = ["--model", "classic", "--scale", "2", "--fps-x", "2", "--no-scene-detect", "--jobs", "2"]
    result = CliRunner().invoke(main, ["batch", str(root), str(tmp_path / "out"), *args])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(rendezvous)) == ["a.mp4.met", "a.mp4.started", "b.mp4.met", "b.mp4.started"]
    assert sorted(os.listdir(tmp_path / "out")) == ["a.mp4", "b.mp4"]
