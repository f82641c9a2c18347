"""Research-only weights are said before the work starts (once), and carried in --json."""

import json

from click.testing import CliRunner
from media import make_video

from stvsr_cli.cli import main
from stvsr_cli.models.registry import load_registry


def test_the_default_model_is_research_only_and_classic_is_not():
    registry = load_registry()
    assert registry.get(registry.default).research_only
    assert not registry.get("classic").research_only and registry.get("classic").license_note() is None


def test_upscale_says_it_once_and_the_json_carries_it(tmp_path):
    src = tmp_path / "in.mp4"
    make_video(src, frames=4, size=(32, 24))
    result = CliRunner().invoke(main, ["upscale", str(src), str(tmp_path / "a.mp4"), "-m", "stvun-film", "--json"])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("the weights of model 'stvun-film' are for research and private use") == 1
    report = json.loads(result.stdout)
    assert report["research_only"] and report["license"].startswith("research and private use")
    plain = CliRunner().invoke(main, ["upscale", str(src), str(tmp_path / "b.mp4"), "-m", "classic", "--json"])
    assert "research" not in plain.stderr and json.loads(plain.stdout)["research_only"] is False


def test_a_batch_says_it_once_for_all_its_files(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4"):
        make_video(folder / name, frames=4, size=(32, 24))
    result = CliRunner().invoke(main, ["batch", str(folder), str(tmp_path / "out"), "-m", "stvun-film"])
    assert result.exit_code == 0, result.output
    assert result.output.count("for research and private use") == 1
