import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from media import make_video, stream_facts

from stvsr_cli import hub
from stvsr_cli.cli import main
from stvsr_cli.errors import StvsrError, UnknownModelError, UnsupportedOptionError
from stvsr_cli.models.loader import load_model
from stvsr_cli.models.registry import load_registry, short_licence


def test_builtin_registry_has_classic_and_a_default_that_works_offline():
    registry = load_registry()
    classic = registry.get("classic")
    assert classic.arch == "classic" and classic.supports_scale(3) and classic.supports_fps_x(5)
    assert hub.available(classic)
    default = registry.get(None)
    assert default.name == registry.default and hub.available(default)  # shipped: `make demo` runs offline


def test_unknown_model_names_the_known_ones():
    with pytest.raises(UnknownModelError, match="unknown model 'nope'") as info:
        load_registry().get("nope")
    assert "classic" in info.value.hint


def test_user_registry_adds_and_overrides_entries(tmp_path, monkeypatch):
    builtin = set(load_registry().models)
    extra = tmp_path / "mine.toml"
    extra.write_text(
        'default = "fixed4"\n'
        '[models.fixed4]\narch = "classic"\nscale = [4]\nfps_x = [2]\nwindow = 5\noverlap = 2\nlicense = "x"\n'
        '[models.classic]\narch = "classic"\nscale = [2]\nfps_x = "any"\n'
    )
    monkeypatch.setenv("STVSR_REGISTRY", str(extra))
    registry = load_registry()
    assert set(registry.models) == builtin | {"fixed4"} and registry.default == "fixed4"
    assert registry.get("classic").scales == (2,)  # same name: the user's entry wins
    spec = registry.get("fixed4")
    assert spec.scales == (4,) and spec.fps_x == (2,) and spec.window == 5
    with pytest.raises(UnsupportedOptionError, match="does not support --scale 2"):
        load_model(spec, scale=2, device="cpu")


def test_local_weights_are_found_beside_the_registry_file(tmp_path):
    extra = tmp_path / "mine.toml"
    extra.write_text('[models.mine]\narch = "zsm"\nweights = "w/mine.safetensors"\n')
    spec = load_registry(extra).get("mine")
    assert spec.weights == str(tmp_path / "w" / "mine.safetensors") and not hub.available(spec)
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "mine.safetensors").write_bytes(b"")
    assert hub.available(spec)


@pytest.mark.parametrize(
    "entry,message",
    [
        ('arch = "classic"\ncolour = 1', "unknown key"),
        ('arch = "nosuch"', "unknown arch"),
        ('arch = "classic"\nscale = 0', "'scale' must be"),
        ('arch = "classic"\nwindow = 3\noverlap = 3', "overlap < window"),
        ('arch = "classic"\nweights = "https://example.org/w.safetensors"', "sha256"),
        # Asking for more than the architecture can do: the fact named, and what it can.
        ('arch = "zsm"\ntimes = "any"', "times \"any\" asks for more than arch 'zsm' can do"),
        ('arch = "zsm"\nscale = [2, 4]', "scale \\[2, 4\\] asks for more than arch 'zsm' can do \\(scale 4\\)"),
        ('arch = "stinet"\nfps_x = 3', "fps_x 3 asks for more than arch 'stinet' can do \\(fps_x 2, 4, 6\\)"),
        ('arch = "zsm"\nfps_x = "any"', "fps_x 'any' asks for more than arch 'zsm' can do"),
        ('arch = "stvun"\nparams = { frames = 4 }\nwindow = 4\nmin_frames = 2', "min_frames 2 asks for more"),
    ],
)
def test_invalid_entries_name_the_file_and_the_entry(tmp_path, entry, message):
    extra = tmp_path / "bad.toml"
    extra.write_text(f"[models.broken]\n{entry}\n")
    with pytest.raises(StvsrError, match=message) as info:
        load_registry(extra)
    assert str(extra) in info.value.message and "'broken'" in info.value.message


def test_an_entry_takes_its_architectures_facts_and_may_narrow_them(tmp_path):
    extra = tmp_path / "mine.toml"
    extra.write_text(
        '[models.plain]\narch = "stinet"\n[models.x2]\narch = "stinet"\nfps_x = 2\n'
        '[models.steps]\narch = "classic"\nfps_x = [2, 3]\n[models.sized]\narch = "stvun"\nparams = { frames = 5 }\n'
        'window = 5\noverlap = 2\n'
    )
    registry = load_registry(extra)
    assert registry.get("plain").fps_x == (2, 4, 6) and registry.get("x2").fps_x == (2,)
    steps = registry.get("steps")  # narrowing fps_x asks for those steps only
    assert steps.fps_x == (2, 3) and not steps.arbitrary_times and steps.scales is None
    sized = registry.get("sized")  # sized for windows of 5 frames: never fewer
    assert sized.arbitrary_times and sized.min_frames == 5


def test_every_network_class_carries_its_architectures_facts():
    from stvsr_cli.models.registry import ARCHITECTURES, architecture

    for name, arch in ARCHITECTURES.items():
        cls = architecture(load_registry().get(name) if name == "classic" else _bare(name))
        facts = (cls.time_factors, cls.arbitrary_times, cls.window_param, cls.shot_edges, cls.exact_tiles)
        assert facts == (arch.time_factors, arch.arbitrary_times, arch.window_param, arch.shot_edges, arch.exact_tiles)


def _bare(arch: str):
    from stvsr_cli.models.registry import ModelSpec

    return ModelSpec(name="", arch=arch)


def test_a_learned_model_without_weights_is_refused_in_one_line(tmp_path, monkeypatch):
    extra = tmp_path / "mine.toml"
    extra.write_text('[models.untrained]\narch = "zsm"\nparams = { nf = 8, groups = 8, front_rbs = 1, back_rbs = 1 }\n')
    monkeypatch.setenv("STVSR_REGISTRY", str(extra))
    spec = load_registry().get("untrained")
    with pytest.raises(StvsrError, match="model 'untrained' has no weights"):
        load_model(spec, scale=4, device="cpu")
    assert not load_model(spec, scale=4, device="cpu", random_weights=True).module.training  # tests may
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_video(src, frames=3, size=(32, 24))
    result = CliRunner().invoke(main, ["upscale", str(src), str(dst), "--model", "untrained"])
    assert result.exit_code == 1 and not dst.exists()
    line = (
        "stvsr: error: model 'untrained' has no weights: an untrained 'zsm' network would make noise "
        "(name them in its registry entry ('weights'), or give --weights FILE)"
    )
    assert result.stderr.strip().splitlines() == [line]
    assert "Traceback" not in result.output + result.stderr
    download = CliRunner().invoke(main, ["weights", "download", "untrained"])
    assert "needs no weights" not in download.output and download.exit_code != 0


def test_loaded_model_runs_a_window_on_cpu():
    model = load_model(load_registry().get("classic"), scale=2, device="cpu")
    assert model.device.type == "cpu" and not model.half
    out = model(torch.rand(3, 3, 4, 5), fps_x=2)
    assert out.shape == (5, 3, 8, 10)


def test_half_precision_is_refused_on_cpu():
    with pytest.raises(UnsupportedOptionError, match="CUDA"):
        load_model(load_registry().get("classic"), scale=2, device="cpu", half=True)


def test_models_command_prints_a_table_and_json():
    runner = CliRunner()
    table = runner.invoke(main, ["models"])
    assert table.exit_code == 0 and "classic" in table.output and "built in" in table.output
    listing = runner.invoke(main, ["models", "--json"])
    assert listing.exit_code == 0
    rows = json.loads(listing.stdout)
    classic = next(r for r in rows if r["name"] == "classic")
    assert classic["arch"] == "classic" and classic["scale"] == "any" and classic["available"] is True


def table_lines(output: str) -> list[str]:
    """The body rows of a rich table: the lines between the header rule and the bottom rule."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("┡"))
    end = next(i for i, line in enumerate(lines) if line.startswith("└"))
    return lines[start + 1 : end]


@pytest.mark.parametrize("short", [False, True])
def test_models_table_gives_each_model_one_line_at_80_columns(tmp_path, monkeypatch, short):
    """The licence column holds a short name (``license_short``, else the licence before its first
    parenthesis), so no row wraps at 80 columns; ``--json`` keeps the full text."""
    if short:  # the registry's short names, as an entry would give them
        extra = tmp_path / "short.toml"
        registry = load_registry()
        extra.write_text(
            "".join(
                f'[models.{name}]\narch = "{spec.arch}"\nlicense = "{spec.license}"\n'
                f'license_short = "{"research/private" if "research" in spec.license else "x"}"\n'
                for name, spec in registry.models.items()
            )
        )
        monkeypatch.setenv("STVSR_REGISTRY", str(extra))
    registry = load_registry()
    runner = CliRunner()
    table = runner.invoke(main, ["models"], env={"COLUMNS": "80"})
    assert table.exit_code == 0
    assert max(map(len, table.output.splitlines())) <= 80
    rows = table_lines(table.output)
    assert len(rows) == len(registry.models)  # one line each: nothing wrapped
    for row, name in zip(rows, registry.models, strict=True):
        assert row.split("│")[1].strip() == name + (" *" if name == registry.default else "")
    assert "* the default model" in table.output
    if short:
        assert "research/private" in table.output
    else:
        # The built-in registry: derived short names for classic and zsm, the entries' own for the rest.
        assert "│ GPL-3.0 " in table.output and "│ MIT " in table.output and "research/private" in table.output

    listing = json.loads(runner.invoke(main, ["models", "--json"]).stdout)
    for row in listing:  # the full licence stays in --json
        assert row["license"] == registry.get(row["name"]).license
        assert row["license_short"] == registry.get(row["name"]).short_license
    if not short:
        zsm = next(r for r in listing if r["name"] == "zsm")
        assert zsm["license"] == "GPL-3.0 (the authors' weights)" and zsm["license_short"] == "GPL-3.0"


@pytest.mark.parametrize(
    "text,short",
    [
        ("MIT (no weights)", "MIT"),
        ("GPL-3.0 (the authors' weights)", "GPL-3.0"),
        ("research and private use (its training data; see x.md)", "research and private use"),
        ("see davsr-cpu.md (training data: research and private use)", "see davsr-cpu.md"),
        ("Apache-2.0; see NOTICE", "Apache-2.0"),
        ("BSD-3-Clause", "BSD-3-Clause"),
        ("(unknown)", "(unknown)"),
        ("", ""),
    ],
)
def test_short_licence_is_the_text_before_a_parenthesis(text, short):
    assert short_licence(text) == short


def test_license_short_key_is_read_and_checked(tmp_path):
    extra = tmp_path / "mine.toml"
    extra.write_text('[models.mine]\narch = "classic"\nlicense = "long (words)"\nlicense_short = "short"\n')
    spec = load_registry(extra).get("mine")
    assert spec.license == "long (words)" and spec.short_license == "short"
    extra.write_text('[models.mine]\narch = "classic"\nlicense_short = 1\n')
    with pytest.raises(StvsrError, match="'license_short' must be a string"):
        load_registry(extra)


def test_models_command_reports_a_broken_user_registry_in_one_line(tmp_path, monkeypatch):
    extra = tmp_path / "bad.toml"
    extra.write_text("[models.x]\narch = 'classic'\nbogus = 1\n")
    monkeypatch.setenv("STVSR_REGISTRY", str(extra))
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "bogus" in result.stderr and "Traceback" not in result.stderr


def shipped_names() -> list[str]:
    registry = load_registry()
    return sorted(name for name, spec in registry.models.items() if spec.weights and "://" not in spec.weights)


def test_shipped_weights_match_their_hash_and_load_strictly_offline():
    """Every model whose weights ship in weights/ works offline and makes x4, x2 frames."""
    registry = load_registry()
    shipped = [registry.get(name) for name in shipped_names()]
    assert {"zsm-lite-cpu", "stvun", "tpsr", "stinet", "davsr"} <= {spec.name for spec in shipped}
    for spec in shipped:
        assert hub.available(spec)
        model = load_model(spec, scale=4, device="cpu", offline=True)  # the shipped models are x4
        frames = torch.rand(spec.window or 4, 3, 16, 16)
        out = model(frames, fps_x=2)
        assert out.shape == (2 * len(frames) - 1, 3, 64, 64) and torch.isfinite(out).all()


EVAL_CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval" / "vimeo_septuplet_samples__00001_0001.mkv"


@pytest.mark.skipif(not EVAL_CLIP.is_file(), reason="../shared/data/eval is not here")
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", shipped_names())
def test_shipped_learned_model_beats_classic_on_real_video(name):
    """``stvsr eval``'s protocol on the middle 128x128 of a real clip (7 frames): the model's PSNR-Y is
    above classic's, on the input its card was evaluated with (davsr's is motion-blurred)."""
    from test_shipped_quality import card_row

    from stvsr_cli.evaluation import Clip, read_clip, score_clip

    registry = load_registry()
    spec = registry.get(name)
    protocol = card_row(Path(spec.weights).with_suffix(".md"), EVAL_CLIP.stem)
    truth = [frame[64:192, 160:288] for frame in read_clip(Clip(EVAL_CLIP.stem, EVAL_CLIP))]
    scores = {}
    for model_name in ("classic", name):
        model = load_model(registry.get(model_name), scale=4, device="cpu", offline=True)
        window, overlap = model.spec.window_and_overlap(None, None)
        scores[model_name] = score_clip(
            EVAL_CLIP.stem, truth, model, scale=4, fps_x=protocol["fps_x"], window=window, overlap=overlap,
            degradation=protocol["degradation"],
        ).psnr_y  # fmt: skip
    assert scores[name] > scores["classic"] + 0.05, scores


@pytest.mark.parametrize("name", ["tpsr", "stinet", "davsr"])
def test_shipped_paper_models_upscale_a_video_end_to_end(name, tmp_path):
    clip = tmp_path / "in.mp4"
    make_video(clip, frames=5, size=(16, 12))
    run = CliRunner().invoke(main, ["upscale", str(clip), str(tmp_path / "o.mp4"), "--model", name, "--offline"])
    assert run.exit_code == 0, run.stderr
    facts = stream_facts(tmp_path / "o.mp4")
    assert facts["frames"] == 10 and (facts["width"], facts["height"]) == (64, 48)
