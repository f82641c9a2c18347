"""stvsr train on the CPU with a tiny network: the loss falls, runs resume exactly, exports load."""

import pytest
import torch
from click.testing import CliRunner
from media import make_training_clips, make_video, stream_facts, train_tiny
from safetensors.torch import load_file

from stvsr_cli.cli import main
from stvsr_cli.training.data import PatchSampler, load_frames
from stvsr_cli.training.trainer import TrainConfig, Trainer

TINY = {"nf": 8, "groups": 8, "front_rbs": 1, "back_rbs": 1}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_training_clips(tmp_path_factory.mktemp("train"), frames=9)


def config(data, out, steps, **extra):
    return TrainConfig(
        arch="zsm", params=TINY, data=[str(data)], out=str(out), name="tiny", steps=steps, batch=2, patch=16,
        log_every=5, warmup=2, **{"save_every": 5, **extra},
    )  # fmt: skip


def test_samples_are_the_protocols_input_and_target(data):
    sampler = PatchSampler(load_frames([data]), frames_in=4, fps_x=2, patch=16, scale=4, seed=3)
    lr, hr = sampler.batch(7, 2)
    assert lr.shape == (2, 4, 3, 4, 4) and hr.shape == (2, 7, 3, 16, 16)
    again_lr, again_hr = sampler.batch(7, 2)
    assert torch.equal(lr, again_lr) and torch.equal(hr, again_hr)  # batch s depends on (seed, s) only
    assert not torch.equal(hr, sampler.batch(8, 2)[1])
    from stvsr_cli.evaluation import downscale_tensor

    assert torch.equal(lr, downscale_tensor(hr[:, ::2], 4))  # input = even frames, bicubic, 8-bit levels


def test_loss_falls_and_the_export_runs_in_upscale(data, tmp_path):
    out = tmp_path / "run"
    logs = train_tiny("zsm", TINY, data, out, "tiny", steps=30, lr="1e-3")
    assert [e["step"] for e in logs] == [5, 10, 15, 20, 25, 30]
    assert logs[-1]["loss"] < 0.7 * logs[0]["loss"]
    weights = out / "tiny.safetensors"
    assert set(load_file(str(weights))) and (out / "tiny.md").read_text().startswith("# tiny")
    assert 'arch = "zsm"' in (out / "tiny.toml").read_text()
    clip = tmp_path / "in.mp4"
    make_video(clip, frames=3, size=(16, 12))
    run = CliRunner().invoke(main, ["upscale", str(clip), str(tmp_path / "out.mp4"), "--model", "zsm", "--weights", str(weights)])
    assert run.exit_code == 0, run.stderr
    assert stream_facts(tmp_path / "out.mp4")["frames"] == 6


def test_resume_continues_exactly(data, tmp_path):
    straight = Trainer(config(data, tmp_path / "straight", 10))
    straight.run(load_frames([data]))

    def ctrl_c(entry):
        if entry.step == 5:
            raise KeyboardInterrupt  # as Ctrl-C would: the trainer saves a checkpoint first

    first = Trainer(config(data, tmp_path / "resumed", 10, save_every=100))
    with pytest.raises(KeyboardInterrupt):
        first.run(load_frames([data]), ctrl_c)
    resumed = Trainer(config(data, tmp_path / "resumed", 10), resume=True)
    assert resumed.step == 5
    saved = torch.load(tmp_path / "resumed" / "checkpoints" / "latest.pt", weights_only=True)["optimizer"]
    assert saved["state"][0]["step"] == resumed.optimizer.state_dict()["state"][0]["step"] == 5
    logs = resumed.run(load_frames([data]))
    assert [e.step for e in logs] == [10]
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_training_mistakes_fail_in_one_line(data, tmp_path):
    runner = CliRunner()
    base = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "2", "--patch", "16", "--batch", "1"]
    no_run = runner.invoke(main, [*base, "--arch", "zsm", "--resume"])
    assert no_run.exit_code == 2 and "nothing to resume" in no_run.stderr
    unknown = runner.invoke(main, [*base, "--arch", "nosuch"])
    assert unknown.exit_code == 2 and "unknown arch" in unknown.stderr
    bad_params = runner.invoke(main, [*base, "--arch", "zsm", "--params", '{"colour": 3}'])
    assert bad_params.exit_code == 2 and "bad --params" in bad_params.stderr
    nothing = runner.invoke(main, [*base, "--arch", "classic"])
    assert nothing.exit_code == 2 and "nothing to train" in nothing.stderr
    assert all("Traceback" not in r.stderr for r in (no_run, unknown, bad_params, nothing))


def test_init_starts_from_a_registered_models_weights(data, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from stvsr_cli.models.zsm import ZoomingSlowMo

    torch.manual_seed(11)
    start = ZoomingSlowMo(**TINY).state_dict()
    save_file(start, str(tmp_path / "mine.safetensors"))
    (tmp_path / "models.toml").write_text(
        f'[models.mine]\narch = "zsm"\nparams = {{ nf = 8, groups = 8, front_rbs = 1, back_rbs = 1 }}\nweights = "mine.safetensors"\n'
    )
    monkeypatch.setenv("STVSR_REGISTRY", str(tmp_path / "models.toml"))
    trainer = Trainer(TrainConfig(arch=None, params={}, data=[str(data)], out=str(tmp_path / "run"), name="ft", init="mine"))
    assert trainer.config.arch == "zsm" and trainer.config.params == TINY
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, start[key])


def test_model_card_takes_the_licence_table_and_paragraph():
    from stvsr_cli.training.export import licence_text

    readme = """# data
## train/
Intro without the word.

| files | licence |
|---|---|
| a.mp4 | BSD-3 |

The licences allow research use;
say so in the card.

## eval/
| files | frames |
|---|---|
| b.mkv | 7 |
"""
    assert licence_text(readme) == (
        "| files | licence |\n|---|---|\n| a.mp4 | BSD-3 |\n\nThe licences allow research use;\nsay so in the card."
    )


def test_staged_schedules_restart_the_learning_rate_where_the_network_changes_stage():
    from stvsr_cli.training.trainer import lr_factor, stage_starts, staged_lr_factor

    for steps in (7, 10, 3000):
        starts = stage_starts(steps, (1 / 3, 2 / 3))
        # each start is the first step whose progress (what training_loss sees) reaches the stage's end
        for start, end in zip(starts[1:], (1 / 3, 2 / 3), strict=True):
            assert start / steps >= end > (start - 1) / steps
    factors = [staged_lr_factor(s, 10, 2, (1 / 3, 2 / 3)) for s in range(10)]
    assert [i for i in range(1, 10) if factors[i] > factors[i - 1] + 0.3] == [4, 7]  # fresh peaks at stage starts
    assert factors[3] < factors[2] < factors[1]  # decays within a stage
    plain = [staged_lr_factor(s, 10, 2) for s in range(10)]
    assert plain == [lr_factor(s, 10, 2) for s in range(10)]  # no stages: the one cosine
