"""The Makefile's install steps: one stamp per step, written only once the step succeeded, so a run after a
failure redoes the failed step and nothing before it; TORCH_INDEX_URL picks the torch build. Dry runs
(`make -n`) in a copy of the Makefile, and one real run with a fake python/pip/stvsr: nothing is installed."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

if shutil.which("make") is None:
    pytest.skip("make is not installed", allow_module_level=True)

MAKEFILE = Path(__file__).parents[1] / "Makefile"
VENV_STAMP = ".venv/.venv-made"
TORCH_STAMP = ".venv/.torch-installed"
PROJECT_STAMP = ".venv/.installed"
TORCH_INSTALL = "pip install torch==2.14.1 torchvision==0.29.1"
PROJECT_INSTALL = "pip install -e ."
URL = "https://example.invalid/whl/cpu"


@pytest.fixture
def work(tmp_path):
    """A folder with a copy of the Makefile and a pyproject.toml (the project step's prerequisite)."""
    shutil.copy(MAKEFILE, tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")
    os.utime(tmp_path / "pyproject.toml", (1_000_000, 1_000_000))
    return tmp_path


def make(work, *args):
    # A `make` that runs these tests passes its flags and command-line variables (TORCH_INDEX_URL=...) down.
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "TORCH_INDEX_URL", "PYTHON")}
    return subprocess.run(["make", *args], cwd=work, env=env, capture_output=True, text=True, timeout=60)


def stamp(work, name, age, text=""):
    """A stamp `age` seconds after the pyproject.toml: later steps get larger ages."""
    path = work / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    os.utime(path, (1_000_000 + age, 1_000_000 + age))


def dry_run(work, *args):
    done = make(work, "-n", "demo", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_fresh_clone_runs_every_step_in_order(work):
    out = dry_run(work)
    steps = ["-m venv .venv", f"touch {VENV_STAMP}", TORCH_INSTALL, TORCH_STAMP, PROJECT_INSTALL,
             f"touch {PROJECT_STAMP}", "stvsr upscale examples/vtest_200x150.mp4 out/vtest_800x600_50fps.mp4"]
    at = [out.find(step) for step in steps]
    assert -1 not in at and at == sorted(at), out
    assert "--index-url" not in out  # the default install is unchanged
    assert "uninstall" not in out


def test_done_steps_are_not_redone(work):
    stamp(work, VENV_STAMP, 1)
    stamp(work, TORCH_STAMP, 2)
    out = dry_run(work)
    assert "-m venv" not in out and TORCH_INSTALL not in out, out
    assert PROJECT_INSTALL in out and "stvsr upscale" in out, out
    stamp(work, PROJECT_STAMP, 3)
    assert "pip" not in dry_run(work)


def test_index_url(work):
    out = dry_run(work, f"TORCH_INDEX_URL={URL}")
    line = next(line for line in out.splitlines() if TORCH_INSTALL in line)
    assert line.endswith(f" --index-url {URL}"), out


@pytest.mark.parametrize("before, now", [("", URL), (URL, URL + "2")])
def test_another_index_url_reinstalls_torch(work, before, now):
    stamp(work, VENV_STAMP, 1)
    stamp(work, TORCH_STAMP, 2, before + "\n")
    stamp(work, PROJECT_STAMP, 3)
    assert "pip" not in dry_run(work, f"TORCH_INDEX_URL={before}")  # the same URL: nothing to do
    out = dry_run(work, f"TORCH_INDEX_URL={now}")
    # The old pair goes first: pip would take a 2.14.1+cpu it has for torch==2.14.1 and keep it.
    at = [out.find(step) for step in ("pip uninstall -y torch torchvision", TORCH_INSTALL, PROJECT_INSTALL)]
    assert -1 not in at and at == sorted(at), out
    assert "-m venv" not in out and f"--index-url {now}" in out


def test_a_build_once_chosen_is_kept_by_runs_that_name_none(work):
    stamp(work, VENV_STAMP, 1)
    stamp(work, TORCH_STAMP, 2, URL + "\n")
    stamp(work, PROJECT_STAMP, 3)
    assert "pip" not in dry_run(work)  # `make test` after `make demo TORCH_INDEX_URL=...`


def test_failed_recipes_leave_no_target():
    assert re.search(r"^\.DELETE_ON_ERROR:", MAKEFILE.read_text(), re.MULTILINE)


FAKE_PYTHON = """#!/bin/sh
# python -m venv DIR: DIR/bin/pip and DIR/bin/stvsr, which log what they are asked in ./log
[ "$1" = -m ] && [ "$2" = venv ] || exit 2
echo venv >> log
mkdir -p "$3/bin"
cp fake/pip fake/stvsr "$3/bin/"
"""
FAKE_PIP = """#!/bin/sh
echo "pip $*" >> log
case "$*" in *torch==*) if [ -e fail-torch ]; then echo 'download cut off' >&2; exit 1; fi ;; esac
"""
FAKE_STVSR = """#!/bin/sh
echo "stvsr $*" >> log
echo video > "$3"
"""


def test_failed_step_is_redone_and_nothing_before_it(work):
    (work / "fake").mkdir()
    for name, text in (("python", FAKE_PYTHON), ("pip", FAKE_PIP), ("stvsr", FAKE_STVSR)):
        (work / "fake" / name).write_text(text)
        (work / "fake" / name).chmod(0o755)
    python = f"PYTHON={work / 'fake' / 'python'}"
    log = work / "log"

    (work / "fail-torch").touch()
    failed = make(work, "demo", python)
    assert failed.returncode != 0 and "download cut off" in failed.stderr
    assert (work / VENV_STAMP).exists()
    assert not (work / TORCH_STAMP).exists() and not (work / PROJECT_STAMP).exists()
    assert log.read_text().splitlines() == ["venv", TORCH_INSTALL]

    (work / "fail-torch").unlink()
    done = make(work, "demo", python)
    assert done.returncode == 0, done.stderr
    assert log.read_text().splitlines()[2:] == [
        TORCH_INSTALL, PROJECT_INSTALL,
        "stvsr upscale examples/vtest_200x150.mp4 out/vtest_800x600_50fps.mp4 --overwrite"]
    assert re.search(r"^demo: wrote out/vtest_800x600_50fps\.mp4 in \d+ s$", done.stdout, re.MULTILINE), done.stdout
    assert (work / "out/vtest_800x600_50fps.mp4").read_text() == "video\n"

    again = make(work, "demo", python)  # everything installed: only the demo runs
    assert again.returncode == 0, again.stderr
    assert [line for line in log.read_text().splitlines()[5:] if not line.startswith("stvsr")] == []
