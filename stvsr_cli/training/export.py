"""What a training run leaves behind: weights (safetensors), a model card, a registry entry."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import torch
from safetensors.torch import save_file

from stvsr_cli import hub
from stvsr_cli.evaluation import EvalResult, evaluate
from stvsr_cli.models.loader import Upscaler, load_model
from stvsr_cli.models.registry import load_registry
from stvsr_cli.training.data import FrameCache
from stvsr_cli.training.licences import PERMISSIVE_WEIGHTS, WeightsLicence, weights_licence
from stvsr_cli.training.trainer import TrainConfig, Trainer


@dataclass(frozen=True)
class Export:
    weights: Path
    card: Path
    registry: Path
    result: EvalResult | None
    baseline: EvalResult | None
    unseen: EvalResult | None = None  # the held-out clips (``split.VAL_UNSEEN``)
    unseen_baseline: EvalResult | None = None

    def summary_lines(self) -> list[str]:
        """What was written, and the scores against classic's."""
        lines = [f"wrote {self.weights}, {self.card}, {self.registry}"]
        for label, ours, base in (
            ("eval", self.result, self.baseline),
            ("val_unseen", self.unseen, self.unseen_baseline),
        ):
            if ours is not None and base is not None:
                lines.append(
                    f"{label}: {ours.mean['psnr_y']:.2f} dB / {ours.mean['ssim_y']:.4f} "
                    f"(classic {base.mean['psnr_y']:.2f} dB / {base.mean['ssim_y']:.4f}, "
                    f"{ours.mean['psnr_y'] - base.mean['psnr_y']:+.2f} dB)"
                )
        return lines


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA), torch {torch.__version__}"
    return f"CPU ({platform.processor() or platform.machine()}, {_count(torch.get_num_threads(), 'thread')}), torch {torch.__version__}"


def data_licences(data: list[str]) -> str:
    """The licence table and paragraphs of a README beside or above the training data, if any."""
    for folder in data:
        for readme in (Path(folder) / "README.md", Path(folder).parent / "README.md"):
            if readme.is_file():
                found = licence_text(readme.read_text())
                if found:
                    return f"From {readme}:\n\n{found}"
    return "Not stated with the data: add the licences of the training footage before publishing this model."


def licence_text(markdown: str) -> str:
    """Tables whose header mentions a licence, and paragraphs that do, in order."""
    kept: list[str] = []
    block: list[str] = []

    def close() -> None:
        if not block:
            return
        is_table = block[0].startswith("|")
        if "licen" in (block[0] if is_table else " ".join(block)).lower():
            kept.append("\n".join(block))
        block.clear()

    for line in markdown.splitlines():
        starts_table = line.startswith("|") and not (block and block[0].startswith("|"))
        if (
            not line.strip()
            or line.startswith("#")
            or starts_table
            or (block and block[0].startswith("|") and not line.startswith("|"))
        ):
            close()
        if line.strip() and not line.startswith("#"):
            block.append(line)
    close()
    return "\n\n".join(kept)


def export(trainer: Trainer, cache: FrameCache, eval_data: list[str] | None = None) -> Export:
    config, out = trainer.config, Path(trainer.config.out)
    weights = out / f"{config.name}.safetensors"
    state = {k: v.detach().to("cpu").contiguous() for k, v in trainer.model.state_dict().items()}
    save_file(
        state, str(weights), metadata=hub.architecture_metadata(config.arch or "", config.params, trainer.lineage)
    )
    licence = weights_licence(trainer.lineage, config.name)
    sha256 = hub.file_sha256(weights)

    result = baseline = unseen = unseen_baseline = None
    if eval_data:  # the eval clips, and beside them the held-out training clips (``split``)
        trainer.model.eval()
        ours = Upscaler(config.spec(), trainer.model, config.scale, trainer.device, half=False)
        classic = load_model(load_registry().get("classic"), scale=config.scale, device=trainer.device)
        result, baseline = (
            evaluate(eval_data, m, fps_x=config.fps_x, degradation=config.degradation) for m in (ours, classic)
        )
        if cache.held_out:
            unseen, unseen_baseline = (
                evaluate(cache.held_out, m, fps_x=config.fps_x, degradation=config.degradation) for m in (ours, classic)
            )

    spec = config.spec()
    entry = (
        f"[models.{config.name}]\n"
        f'arch = "{config.arch}"\n'
        f"params = {{ {', '.join(f'{k} = {_toml(v)}' for k, v in config.params.items())} }}\n"
        f"scale = {config.scale}\n"
        + ('fps_x = "any"\ntimes = "any"\n' if spec.arbitrary_times else f"fps_x = {_factors(spec.fps_x)}\n")
        + f"window = {spec.window}\noverlap = {spec.overlap}\n"
        + (f"min_frames = {spec.min_frames}\n" if spec.min_frames > 2 else "")
        + f'weights = "{weights.name}"\nsha256 = "{sha256}"\n'
        f"license = {json.dumps(licence.license)}\n"
        f"license_short = {json.dumps(licence.short)}\n"
        f'description = "{config.arch} trained by stvsr train for {trainer.step} steps"\n'
    )
    registry = out / f"{config.name}.toml"
    registry.write_text(entry)
    card = out / f"{config.name}.md"
    card.write_text(_card(trainer, cache, weights, sha256, entry, result, baseline, unseen, unseen_baseline, licence))
    return Export(weights, card, registry, result, baseline, unseen, unseen_baseline)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _factors(factors: tuple[int, ...]) -> str:
    return str(factors[0]) if len(factors) == 1 else _toml(list(factors))


def _time_text(trainer: Trainer, config: TrainConfig) -> str:
    if config.spec().arbitrary_times:
        return "any time between its inputs (trained at x2, x3 and x4)"
    if trainer.time_factors and len(trainer.time_factors) > 1:
        return " / ".join(f"x{k}" for k in trainer.time_factors) + " in time (each batch draws one)"
    return f"x{(trainer.time_factors or (config.fps_x,))[0]} in time"


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def _card(trainer, cache, weights, sha256, entry, result, baseline, unseen, unseen_baseline, licence) -> str:
    config = trainer.config
    n_params = sum(p.numel() for p in trainer.model.parameters())
    lines = [
        f"# {config.name}",
        "",
        f"Architecture `{config.arch}` with params `{json.dumps(config.params)}` ({n_params:,} parameters), "
        f"x{config.scale} in space, " + _time_text(trainer, config) + ", trained by `stvsr train`.",
        "",
        "## Training",
        "",
        f"- data: {', '.join(config.data)} ({len(cache.clips)} clips, {cache.frame_count} frames; "
        f"{len(cache.held_out)} held out as val_unseen)",
        f"- steps: {trainer.step}, batch {config.batch}, {config.patch}x{config.patch} HR patches, "
        f"{config.frames_in} input frames per sample ({config.degradation} degradation), AdamW lr {config.lr} (warm-up, cosine decay), "
        f"{trainer.model.loss_description}, gradient clipping {config.clip_grad}, mixed precision: {trainer.amp or 'none'}",
        f"- wall time: {trainer.elapsed / 60:.1f} min on {hardware(trainer.device)}",
        f"- date: {date.today().isoformat()}",
        f"- weights: `{weights.name}`, sha256 `{sha256}`",
        "",
        "## Evaluation",
        "",
    ]
    if result is None:
        lines.append("Not evaluated (run `stvsr train` with `--eval DIR`).")
    else:
        lines += [
            (
                f"`stvsr eval --degradation {config.degradation}` protocol (PSNR-Y dB / SSIM-Y, all frames; "
                "input-position and in-between frames apart):"
            ),
            "",
            "| clip | classic | this model | classic interp. | this model interp. |",
            "|---|---|---|---|---|",
        ]
        for ours, base in zip(result.clips, baseline.clips, strict=True):
            lines.append(
                f"| {ours.name} | {base.psnr_y:.2f} / {base.ssim_y:.4f} | {ours.psnr_y:.2f} / {ours.ssim_y:.4f} "
                f"| {_db(base.interp_psnr_y)} | {_db(ours.interp_psnr_y)} |"
            )
        lines.append(
            f"| **mean** | {baseline.mean['psnr_y']:.2f} / {baseline.mean['ssim_y']:.4f} "
            f"| {result.mean['psnr_y']:.2f} / {result.mean['ssim_y']:.4f} | | |"
        )
    if unseen is not None:
        lines += [
            "",
            f"Held out (`val_unseen`: {_count(len(unseen.clips), 'training clip')} no run trains on, the nearest "
            "stand-in for footage no one has seen):",
            "",
            "| clip | classic | this model |",
            "|---|---|---|",
        ]
        for ours, base in zip(unseen.clips, unseen_baseline.clips, strict=True):
            lines.append(
                f"| {ours.name} | {base.psnr_y:.2f} / {base.ssim_y:.4f} | {ours.psnr_y:.2f} / {ours.ssim_y:.4f} |"
            )
        lines.append(
            f"| **mean** | {unseen_baseline.mean['psnr_y']:.2f} / {unseen_baseline.mean['ssim_y']:.4f} "
            f"| {unseen.mean['psnr_y']:.2f} / {unseen.mean['ssim_y']:.4f} |"
        )
    lines += ["", "## Licence", "", _licence_text(licence, config), "", "## Registry entry"]
    lines += [
        "",
        "```toml",
        entry.rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def _licence_text(licence: WeightsLicence, config: TrainConfig) -> str:
    """What the weights may be used for and why: the sources of every clip in their lineage."""
    if licence.permissive:
        head = (
            f"These weights are published under {PERMISSIVE_WEIGHTS}: use them, change them and publish what "
            "you make with them, crediting this model. Every clip that trained them (this run's and those "
            "of the weights it started from) is permissively licensed:"
        )
    elif licence.research_only:
        head = (
            "For research and private use only, not for work you publish: these sources allow no more "
            f"({', '.join(licence.not_permissive)}). Every source in the weights' lineage:"
        )
    else:
        head = (
            f"Not known: stvsr does not know the licence of {', '.join(licence.not_permissive)}. "
            "State it here before publishing these weights. Every source in the weights' lineage:"
        )
    text = "\n".join([head, "", *(f"- {line}" for line in licence.credits())])
    if not licence.permissive and not licence.research_only:
        text += "\n\n" + data_licences(config.data)
    return text


def _db(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
