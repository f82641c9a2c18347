"""The command line's shared vocabulary: parameter types and the option groups several commands
take (defined once, so ``upscale`` and ``batch`` offer the same flags), and the ``UpscaleOptions``
those flags make."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from fractions import Fraction
from pathlib import Path
from typing import Any

import click

from stvsr_cli.io.encode import EncodeSettings
from stvsr_cli.io.filters import DENOISE_LEVELS
from stvsr_cli.models.speed import DEFORM_CONVS, MAX_BATCH_WINDOWS, Speed
from stvsr_cli.options import (
    DEDUP_MODES,
    DEFAULT_SEGMENT_FRAMES,
    DEINTERLACE_MODES,
    GRAIN_MODES,
    IVTC_MODES,
    UpscaleOptions,
)  # fmt: skip
from stvsr_cli.pipeline.scenes import DEFAULT_SCENE_THRESHOLD


class Seconds(click.ParamType):
    """Seconds as a number, or [HH:]MM:SS(.sss)."""

    name = "seconds"

    def convert(self, value: Any, param, ctx) -> Fraction:
        if isinstance(value, Fraction):
            return value
        try:
            parts = [Fraction(p) for p in str(value).strip().split(":")]
            if len(parts) > 3 or any(p < 0 for p in parts):
                raise ValueError
        except (ValueError, ZeroDivisionError):
            self.fail(f"'{value}' is not a time in seconds or [HH:]MM:SS", param, ctx)
        total = Fraction(0)
        for part in parts:
            total = total * 60 + part
        return total


class Size(click.ParamType):
    """WIDTHxHEIGHT."""

    name = "WxH"

    def convert(self, value: Any, param, ctx) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        try:
            width, height = (int(v) for v in str(value).lower().split("x"))
            if width < 1 or height < 1:
                raise ValueError
        except ValueError:
            self.fail(f"'{value}' is not a size such as 480x270", param, ctx)
        return width, height


class Box(click.ParamType):
    """X,Y,W,H."""

    name = "X,Y,W,H"

    def convert(self, value: Any, param, ctx) -> tuple[int, int, int, int]:
        if isinstance(value, tuple):
            return value
        try:
            x, y, w, h = (int(v) for v in str(value).split(","))
            if min(x, y) < 0 or min(w, h) < 1:
                raise ValueError
        except ValueError:
            self.fail(f"'{value}' is not a box such as 400,300,256,256", param, ctx)
        return x, y, w, h


def choice_option(flag: str, choices: tuple[str, ...], default: str, help: str) -> Callable:
    """A ``flag`` taking one of ``choices``, ``default`` shown in ``--help``."""
    return click.option(flag, type=click.Choice(choices), default=default, show_default=True, help=help)


def option_group(*options: Callable) -> Callable:
    """Apply several click options as one decorator (commands share the model options)."""

    def apply(fn: Callable) -> Callable:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


max_memory_option = click.option(
    "--max-memory",
    metavar="SIZE",
    default=None,
    help="Memory the model may use (4G, 512M; default: 70% of what is free at start); tiles are sized to fit.",
)

model_options = option_group(
    click.option(
        "-m", "--model", default=None, help="Registered model (see `stvsr models`); default: the default model."
    ),
    click.option("-s", "--scale", type=click.IntRange(1, 16), default=4, show_default=True, help="Spatial factor."),
    click.option("-x", "--fps-x", type=click.IntRange(1, 64), default=2, show_default=True, help="Frame-rate factor."),
    click.option("--window", type=click.IntRange(min=2), default=None, help="Input frames per model call."),
    click.option("--overlap", type=click.IntRange(min=1), default=None, help="Frames shared by consecutive calls."),
    click.option(
        "--device",
        default="auto",
        show_default=True,
        help="auto, cpu, cuda or cuda:N (classic runs on the CPU unless cuda is named).",
    ),
    click.option("--half/--no-half", default=None, help="float16 inference (default: on for CUDA where supported)."),
    click.option(
        "--device-colour/--no-device-colour",
        default=None,
        help="Convert to the encoder's YUV on the model's device; only its planes come back (default: off, until measured).",
    ),
    max_memory_option,
    click.option(
        "--weights",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="Run the model's architecture with this local weights file instead.",
    ),
    click.option("--offline", is_flag=True, default=None, help="Never download (also: HF_HUB_OFFLINE=1)."),
)

# How the network runs, never what it computes: each speed-up on its own flag, to measure it alone.
speed_options = option_group(
    click.option("--channels-last/--no-channels-last", default=None, help="NHWC convolutions (default: on for CUDA)."),
    click.option("--compile", is_flag=True, help="torch.compile the network (the first call of a shape compiles)."),
    click.option("--cuda-graphs", is_flag=True, help="Compile and replay the network as CUDA graphs (CUDA only)."),
    click.option(
        "--batch-windows",
        type=click.IntRange(1, MAX_BATCH_WINDOWS),
        default=1,
        show_default=True,
        help="Windows per model call, for small frames on a GPU.",
    ),
    click.option(
        "--copy-stream/--no-copy-stream",
        default=None,
        help="Copy frames to and from the GPU on streams of their own, beside the model (CUDA; default: off, until measured).",
    ),
    choice_option(
        "--deform-conv",
        DEFORM_CONVS,
        "auto",
        "Deformable convolution: torchvision's kernel (auto on CUDA), ours in PyTorch (auto on the CPU), "
        "or a fused Triton kernel (CUDA).",
    ),
)
SPEED_KEYS = ("channels_last", "compile", "cuda_graphs", "batch_windows", "copy_stream", "deform_conv")


plan_option = click.option(
    "--plan",
    is_flag=True,
    help="Say what would happen and how long it would take (from one timed window), then stop; writes nothing.",
)
# What `stvsr batch` adds: which files, where to, the report, sharing the work, the forecast.
batch_options = option_group(
    click.option(
        "--pattern",
        "patterns",
        multiple=True,
        help="File name or relative path glob to take (repeat; default: common video extensions).",
    ),
    click.option("--ext", default=None, help="Write outputs with this extension (container) instead of the input's."),
    click.option(
        "--report", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Write a JSON report."
    ),
    click.option("--shard", "shard_spec", default=None, metavar="K/N", help="Process only shard K of N (1-based)."),
    click.option(
        "--jobs", type=click.IntRange(min=1), default=None, help="Files at once (default: one per GPU, or 1)."
    ),
    click.option(
        "--ray",
        "ray_address",
        is_flag=False,
        flag_value="local",
        default=None,
        metavar="[ADDRESS]",
        help="Run the files as Ray tasks: on the cluster at ADDRESS ('auto' for the running one), or a local one.",
    ),
    click.option(
        "--ray-gpus-per-task", type=click.FloatRange(min=0), default=None, help="GPUs per Ray task (default 1 if any)."
    ),
    plan_option,
)
denoise_option = choice_option(
    "--denoise",
    DENOISE_LEVELS,
    "off",
    "Remove grain and noise before the model (FFmpeg's fftdnoiz), so that no network enlarges it.",
)
deflicker_option = click.option(
    "--deflicker", is_flag=True, help="Even out brightness flicker before the model (FFmpeg's deflicker)."
)
# What a run does besides the model: frame rate, tiles, encoder, piece, scene cuts, deinterlacing,
# telecine, clean-up, grain, repeats.
job_options = option_group(
    click.option(
        "--fps",
        default=None,
        metavar="RATE",
        help="Output frame rate instead of --fps-x (60, 59.94, 60000/1001); needs a model with arbitrary times.",
    ),
    click.option(
        "--tile", type=click.IntRange(min=0), default=0, help="Run the model on tiles of this many LR pixels (0 = off)."
    ),
    click.option("--codec", default=None, help="Video encoder (default libx264, or the container's default)."),
    click.option("--crf", type=click.FloatRange(min=0), default=None, help="Quality for CRF encoders (default 18)."),
    click.option("--preset", default=None, help="Encoder preset (default medium for x264/x265)."),
    click.option(
        "--pix-fmt", default=None, help="Output pixel format (default yuv420p, yuv420p10le for 10-bit input)."
    ),
    click.option("--start", type=Seconds(), default=None, help="Start this many seconds in (or [HH:]MM:SS)."),
    click.option("--duration", type=Seconds(), default=None, help="Process only this many seconds."),
    click.option(
        "--scene-detect/--no-scene-detect",
        default=True,
        show_default=True,
        help="Find hard cuts first; no model call spans one, and frames between two shots repeat the nearer one.",
    ),
    click.option(
        "--scene-threshold",
        type=click.FloatRange(min=0, min_open=True),
        default=DEFAULT_SCENE_THRESHOLD,
        show_default=True,
        help="Cut score (percent of full scale) above which a frame starts a new shot; lower finds more cuts.",
    ),
    choice_option(
        "--deinterlace",
        DEINTERLACE_MODES,
        "auto",
        "Deinterlace (bwdif, frame rate kept) before the model; auto: when the stream says it is interlaced.",
    ),
    choice_option(
        "--ivtc",
        IVTC_MODES,
        "auto",
        "Undo hard telecine (3:2 pulldown: fieldmatch + decimate), giving back the film's own frames at "
        "4/5 of the rate; auto: when the stream is interlaced and its first 10 s show the cadence.",
    ),
    denoise_option,
    deflicker_option,
    choice_option(
        "--grain",
        GRAIN_MODES,
        "off",
        "keep: add grain of the input's measured strength back after the model (per shot, new each frame).",
    ),
    choice_option(
        "--dedup",
        DEDUP_MODES,
        "auto",
        "Drop frames that repeat the previous one (telecine) and re-time the rest, so the output does not "
        "judder; auto: where they repeat in a regular pattern.",
    ),
    click.option(
        "--segment-frames",
        type=click.IntRange(min=1),
        default=DEFAULT_SEGMENT_FRAMES,
        show_default=True,
        help="Output frames per resumable segment (a run that stops resumes after the last finished one).",
    ),
)


# How ground truth becomes the model's input, for stvsr eval and stvsr train (evaluation.DEGRADATIONS).
degradation_option = click.option(
    "--degradation",
    type=click.Choice(["standard", "blur", "film"]),
    default="standard",
    show_default=True,
    help="Input: every fps-x-th frame (standard), the mean of the frames around it (blur, as DAVSR), "
    "or every fps-x-th frame as an old film transfer (film: blur, grain, dust, scratches, flicker, codec).",
)


# stvsr train's options: the run, its data and its schedule.
train_options = option_group(
    click.option("--arch", default=None, help="Architecture key (see `stvsr models`), e.g. zsm."),
    click.option("--params", default="{}", help='Constructor params as JSON, e.g. \'{"nf": 16, "back_rbs": 4}\'.'),
    click.option(
        "--data", multiple=True, required=True, type=click.Path(path_type=Path), help="Training clips (repeat)."
    ),
    click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False), help="Run folder."),
    click.option("--name", default=None, help="Model name for the export (default: the --out folder's name)."),
    click.option("--steps", type=click.IntRange(min=1), default=10_000, show_default=True),
    click.option(
        "--time-budget",
        type=click.FloatRange(min=1),
        default=None,
        help="Seconds for the run from its start: the steps are set from the speed of its first ones so "
        "that the learning-rate schedule ends in time (--steps is then the most it takes).",
    ),
    click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True),
    click.option("--patch", type=click.IntRange(min=8), default=128, show_default=True, help="HR patch size."),
    click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=4e-4, show_default=True),
    click.option(
        "--frames-in", type=click.IntRange(min=2), default=4, show_default=True, help="Input frames per sample."
    ),
    click.option("-x", "--fps-x", type=click.IntRange(min=1), default=2, show_default=True),
    click.option("-s", "--scale", type=click.IntRange(min=1), default=4, show_default=True),
    degradation_option,
    click.option("--device", default="auto", show_default=True),
    click.option(
        "--amp",
        type=click.Choice(["bf16", "fp16", "none"]),
        default=None,
        help="Mixed precision (default: bf16 or fp16 on CUDA, none on the CPU).",
    ),
    click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint."),
    click.option("--val", multiple=True, type=click.Path(path_type=Path), help="Validation clips (repeat)."),
    click.option("--val-every", type=click.IntRange(min=1), default=500, show_default=True),
    click.option("--save-every", type=click.IntRange(min=1), default=500, show_default=True),
    click.option("--log-every", type=click.IntRange(min=1), default=10, show_default=True),
    click.option(
        "--init",
        default=None,
        help="Start from these weights: a registered model, or a checkpoint (.pt) or export (.safetensors) of stvsr train.",
    ),
    click.option(
        "--permissive-only",
        is_flag=True,
        help="Train only on clips whose licence allows publishing the weights (docs/training.md); leave out the rest.",
    ),
    click.option(
        "--eval",
        "eval_data",
        multiple=True,
        type=click.Path(path_type=Path),
        help="Clips for the final evaluation against classic, in the model card.",
    ),
    click.option(
        "--cache-dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="Keep decoded frames here between runs.",
    ),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("-q", "--quiet", is_flag=True),
)


def speed_from(opts: dict[str, Any]) -> Speed:
    """The ``Speed`` made by the speed options in ``opts`` (taken out of it)."""
    return Speed(**{k: opts.pop(k) for k in SPEED_KEYS if k in opts})


def upscale_options(opts: dict[str, Any]) -> UpscaleOptions:
    """The ``UpscaleOptions`` made by the option values in ``opts`` (taken out of it; the rest stay)."""
    encode = {k: opts.pop(k) for k in ("codec", "crf", "preset", "pix_fmt") if k in opts}
    values = {f.name: opts.pop(f.name) for f in fields(UpscaleOptions) if f.name in opts}
    values["offline"] = values.get("offline") or None  # not given: HF_HUB_OFFLINE decides
    values["speed"] = speed_from(opts)
    return UpscaleOptions(encode=EncodeSettings(**encode), **values)
