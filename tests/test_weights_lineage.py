"""What trained weights carry: the licence their training clips allow (this run's and those of the
weights they started from), recorded in the weights, the registry entry and the card; starting from a
checkpoint or an export; a run fitted to a time budget."""

import shutil

import pytest
import torch
from click.testing import CliRunner
from media import make_training_clips, train_tiny
from safetensors import safe_open

from stvsr_cli import hub
from stvsr_cli.cli import main
from stvsr_cli.errors import UsageError
from stvsr_cli.models.registry import load_registry
from stvsr_cli.training.data import load_frames
from stvsr_cli.training.licences import (
    PERMISSIVE_WEIGHTS,
    clip_source,
    is_permissive,
    weights_licence,
)
from stvsr_cli.training.trainer import TrainConfig, Trainer

TINY = {"nf": 8, "groups": 8, "front_rbs": 1, "back_rbs": 1}
PERMISSIVE = ("imageio_cockatoo__cockatoo", "gopro_gpmf-parser__handheld_walkway_hero7")
RESEARCH = "davis2016_val__dog"


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Tiny clips named as the project's training sets name them: two permissive, one research-only."""
    made = make_training_clips(tmp_path_factory.mktemp("made"), frames=9, count=3)
    folder = tmp_path_factory.mktemp("named")
    for src, name in zip(sorted(made.iterdir()), (*PERMISSIVE, RESEARCH), strict=True):
        shutil.copy(src, folder / f"{name}.mkv")
    return folder


def test_the_licence_follows_every_source_in_the_lineage():
    assert clip_source("davis2016_val__dog") == "davis2016_val" and clip_source("mine") == "mine"
    assert is_permissive("opencv_samples__vtest") and not is_permissive("davis2016_val__dog")
    assert not is_permissive("my_holiday__beach")
    free = weights_licence(["imageio_cockatoo__cockatoo", "mdn_interactive-examples"], "m")
    assert free.permissive and free.short == PERMISSIVE_WEIGHTS and "m.md" in free.license
    assert len(free.credits()) == 2 and "BSD-2-Clause" in free.credits()[0]
    research = weights_licence(["imageio_cockatoo", "davis2016_val"], "m")
    assert not research.permissive and research.short == "research/private"
    assert research.not_permissive == ("davis2016_val",) and "research and private use" in research.license
    inherited = weights_licence(["imageio_cockatoo", "weights:stvun-gpu"], "m")  # started from unrecorded weights
    assert inherited.short == "research/private"
    unknown = weights_licence(["imageio_cockatoo", "my_holiday"], "m")
    assert not unknown.permissive and unknown.short == "unknown" and "my_holiday" in unknown.license
    assert not weights_licence([], "m").permissive  # no data at all is not "permissive"


def test_permissive_only_training_leaves_out_the_rest_and_publishes_under_cc_by(clips, tmp_path):
    cache = load_frames([clips], keep=is_permissive)
    assert sorted(cache.names) == sorted(PERMISSIVE) and cache.left_out == [RESEARCH]
    out = tmp_path / "free"
    train_tiny("zsm", TINY, clips, out, "free", steps=2, lr="1e-3", extra=["--permissive-only"])
    entry = load_registry(out / "free.toml").get("free")
    assert entry.license.startswith(PERMISSIVE_WEIGHTS) and entry.short_license == PERMISSIVE_WEIGHTS
    assert not entry.research_only
    listed = CliRunner().invoke(main, ["models"], env={"STVSR_REGISTRY": str(out / "free.toml"), "COLUMNS": "100"})
    assert listed.exit_code == 0 and any("free" in line and "CC-BY-4.0" in line for line in listed.stdout.splitlines())
    card = (out / "free.md").read_text()
    assert "## Licence" in card and "imageio_cockatoo: BSD-2-Clause" in card and "davis2016_val" not in card
    assert sorted(hub.read_lineage(out / "free.safetensors")) == sorted(clip_source(n) for n in PERMISSIVE)
    # All the clips: the research-only one makes the weights research-only, and the card says which.
    out_all = tmp_path / "all"
    train_tiny("zsm", TINY, clips, out_all, "all", steps=2, lr="1e-3")
    entry = load_registry(out_all / "all.toml").get("all")
    assert entry.research_only and entry.short_license == "research/private"
    assert "these sources allow no more (davis2016_val)" in (out_all / "all.md").read_text()


def test_a_run_started_from_a_checkpoint_or_an_export_keeps_its_weights_and_lineage(clips, tmp_path):
    research = tmp_path / "research"
    train_tiny("zsm", TINY, clips, research, "research", steps=2, lr="1e-3")  # trained on davis2016_val too
    for init in (research / "checkpoints" / "latest.pt", research / "research.safetensors"):
        trainer = Trainer(
            TrainConfig(arch=None, params={}, data=[str(clips)], out=str(tmp_path / f"from-{init.suffix[1:]}"),
                        name="next", steps=2, batch=2, patch=16, init=str(init))
        )  # fmt: skip
        assert trainer.config.arch == "zsm" and trainer.config.params == TINY
        with safe_open(str(research / "research.safetensors"), framework="pt") as f:
            for key, value in trainer.model.state_dict().items():
                assert torch.equal(value, f.get_tensor(key)), key
        assert "davis2016_val" in trainer.lineage  # permissive data from here on cannot wash that out
        trainer.run(load_frames([clips], keep=is_permissive))
        assert not weights_licence(trainer.lineage, "next").permissive


def test_a_registered_model_without_a_recorded_lineage_counts_as_research_only(clips, tmp_path):
    trainer = Trainer(
        TrainConfig(arch=None, params={}, data=[], out=str(tmp_path / "ft"), name="ft", steps=2, batch=2, patch=16,
                    init="stvun")
    )  # fmt: skip
    assert trainer.lineage == ("weights:stvun",)
    assert weights_licence(trainer.lineage, "ft").short == "research/private"


def test_init_mistakes_fail_in_one_line(clips, tmp_path):
    base = ["train", "--data", str(clips), "--out", str(tmp_path / "run"), "--steps", "2", "--patch", "16"]
    missing = CliRunner().invoke(main, [*base, "--init", str(tmp_path / "nothing.pt")])
    assert missing.exit_code == 2 and "no such file" in missing.stderr and "Traceback" not in missing.stderr
    junk = tmp_path / "junk.pt"
    torch.save({"not": "a checkpoint"}, junk)
    wrong = CliRunner().invoke(main, [*base, "--init", str(junk)])
    assert wrong.exit_code == 2 and "not a checkpoint of stvsr train" in wrong.stderr
    with pytest.raises(UsageError, match="no architecture recorded"):
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(1)}, str(tmp_path / "bare.safetensors"))
        Trainer(TrainConfig(arch=None, params={}, data=[], out=str(tmp_path / "r2"), name="x",
                            init=str(tmp_path / "bare.safetensors")))  # fmt: skip


def test_a_time_budget_sets_the_steps_from_the_first_ones_speed(clips, tmp_path):
    trainer = Trainer(
        TrainConfig(arch="zsm", params=TINY, data=[str(clips)], out=str(tmp_path / "fit"), name="fit", steps=10**6,
                    batch=2, patch=16, time_budget=100.0)
    )  # fmt: skip
    steps = trainer.fit_steps_to_budget(20, 2.0)  # 10 steps/s, less 5 %, for what is left of 100 s
    assert int(10 * 60 * 0.95) <= steps <= int(10 * 100 * 0.95) and trainer.config.steps == steps
    assert trainer.warmup == min(500, steps // 20)
    capped = Trainer(
        TrainConfig(arch="zsm", params=TINY, data=[str(clips)], out=str(tmp_path / "cap"), name="cap", steps=300,
                    batch=2, patch=16, time_budget=100.0)
    )  # fmt: skip
    assert capped.fit_steps_to_budget(20, 2.0) == 300  # --steps is the most it takes


def test_a_run_with_a_time_budget_ends_its_schedule(clips, tmp_path):
    out = tmp_path / "budget"
    logs = train_tiny("zsm", TINY, clips, out, "budget", steps=400, lr="1e-3", extra=["--time-budget", "4"])
    last = logs[-1]
    assert 25 < last["step"] == last["steps"] <= 400  # fitted after step 25, whatever this machine's speed
    assert last["lr"] == pytest.approx(1e-3 * 0.01, rel=1e-6)  # the cosine schedule ran to its end
    assert all(entry["steps"] == last["steps"] for entry in logs if entry["step"] > 25)
    assert f"for {last['step']} steps" in (out / "budget.toml").read_text()
