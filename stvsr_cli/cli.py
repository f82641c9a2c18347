"""The ``stvsr`` command: parse options, call the API, show progress, map errors to exit codes.

Exit codes: 0 success, 1 runtime error, 2 usage error, 130 interrupted. Errors are one line on
stderr (a traceback only with ``--debug``); ``--json`` puts one JSON object on stdout.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from stvsr_cli import __version__
from stvsr_cli.errors import StvsrError
from stvsr_cli.pipeline.scenes import DEFAULT_SCENE_THRESHOLD
from stvsr_cli.pipeline.timing import rate_text

EXIT_INTERRUPTED = 130


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


def _fail(exc: BaseException, *, debug: bool, json_context: dict | None) -> NoReturn:
    """Print one line for ``exc`` (and the JSON object when asked), then exit with its code."""
    if isinstance(exc, KeyboardInterrupt):
        message, code = (str(exc) or "interrupted; no output was written"), EXIT_INTERRUPTED
    elif isinstance(exc, StvsrError):
        message, code = exc.one_line(), exc.exit_code
    else:
        message, code = f"unexpected {type(exc).__name__}: {exc} (run with --debug for details)", 1
    if debug and not isinstance(exc, KeyboardInterrupt):
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    click.echo(f"stvsr: error: {message}", err=True)
    if json_context is not None:
        click.echo(json.dumps({**json_context, "error": message, "exit_code": code}))
    sys.exit(code)


def _guarded(fn: Callable[[], Any], *, debug: bool, json_context: dict | None = None) -> Any:
    try:
        return fn()
    except (Exception, KeyboardInterrupt) as exc:  # bugs too: one line unless --debug
        _fail(exc, debug=debug, json_context=json_context)


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


class FpsColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:6.1f} fps" if speed else "   ... fps")


class PlainProgress:
    """Progress as a line every ``interval`` seconds, for stderr that is not a terminal (logs,
    ``make demo`` piped): a slow run still says how far it is and how long is left."""

    interval = 10.0

    def __init__(self, label: str) -> None:
        self.label = label
        self.began = self.last = time.monotonic()

    def update(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self.last < self.interval or not done:
            return
        self.last = now
        rate = done / max(now - self.began, 1e-9)
        left = f", about {(total - done) / rate:.0f} s left" if total else ""
        click.echo(f"{self.label}: {done}/{total or '?'} frames, {rate:.1f} frames/s{left}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stvsr")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Space-time video super-resolution: more pixels and more frames in one pass."""
    ctx.obj = {"debug": debug}


def _options(*options: Callable) -> Callable:
    """Apply several click options as one decorator (commands share the model options)."""

    def apply(fn: Callable) -> Callable:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


model_options = _options(
    click.option(
        "-m", "--model", default=None, help="Registered model (see `stvsr models`); default: the default model."
    ),
    click.option("-s", "--scale", type=click.IntRange(1, 16), default=4, show_default=True, help="Spatial factor."),
    click.option("-x", "--fps-x", type=click.IntRange(1, 64), default=2, show_default=True, help="Frame-rate factor."),
    click.option("--window", type=click.IntRange(min=2), default=None, help="Input frames per model call."),
    click.option("--overlap", type=click.IntRange(min=1), default=None, help="Frames shared by consecutive calls."),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
    click.option("--half/--no-half", default=None, help="float16 inference (default: on for CUDA where supported)."),
    click.option(
        "--weights",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="Run the model's architecture with this local weights file instead.",
    ),
    click.option("--offline", is_flag=True, default=None, help="Never download (also: HF_HUB_OFFLINE=1)."),
)


# What a run does besides the model: frame rate, tiles, encoder, piece, scene cuts, deinterlacing.
job_options = _options(
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
    click.option("--pix-fmt", default=None, help="Output pixel format (default yuv420p, yuv420p10le for 10-bit input)."),
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
    click.option(
        "--deinterlace",
        type=click.Choice(["auto", "on", "off"]),
        default="auto",
        show_default=True,
        help="Deinterlace (bwdif, frame rate kept) before the model; auto: when the stream says it is interlaced.",
    ),
    click.option(
        "--segment-frames",
        type=click.IntRange(min=1),
        default=480,
        show_default=True,
        help="Output frames per resumable segment (a run that stops resumes after the last finished one).",
    ),
)


@main.command()
@click.argument("input", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@model_options
@job_options
@click.option(
    "--restart", is_flag=True, help="Discard the segments an interrupted run of this output left, and start over."
)
@click.option("-y", "--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary line on stdout.")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def upscale(ctx: click.Context, input: Path, output: Path, **opts: Any) -> None:
    """Upscale INPUT into OUTPUT: --scale times the size, --fps-x times the frame rate."""
    from stvsr_cli.api import output_count, parse_rate
    from stvsr_cli.api import upscale as run_upscale

    debug = opts.pop("debug") or _debug(ctx)
    quiet, as_json = opts.pop("quiet"), opts.pop("as_json")
    _check_rate_options(ctx, opts)
    console = _stderr()
    show_bar = console.is_terminal and not quiet
    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), FpsColumn(), TimeRemainingColumn(),
        console=console, disable=not show_bar,
    )  # fmt: skip
    scan_task = bar.add_task("finding cuts", total=None, visible=False)
    task = bar.add_task("upscaling", total=None)

    def on_info(info, job) -> None:
        if quiet:
            return
        rate_out = parse_rate(opts["fps"]) if opts.get("fps") is not None else info.frame_rate * job.fps_x
        vfr = ", variable rate" if info.variable_frame_rate else ""
        click.echo(
            f"{info.path.name}: {info.width}x{info.height}, {rate_text(info.frame_rate)} fps{vfr}, "
            f"{info.frame_count} frames -> {info.width * job.scale}x{info.height * job.scale}, "
            f"{rate_text(rate_out)} fps, {output_count(info.frame_count, info.frame_rate, rate_out)} frames "
            f"(model {job.spec.name})",
            err=True,
        )
        bar.start()

    plain = PlainProgress("upscaling") if not show_bar and not quiet else None

    def on_progress(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)
        if plain is not None:
            plain.update(done, total)

    def on_scan(done: int, total: int) -> None:
        bar.update(scan_task, completed=done, total=total, visible=True)

    opts = _upscale_kwargs(opts)
    json_context = {"input": str(input), "output": str(output)} if as_json else None
    try:
        result = _guarded(
            lambda: run_upscale(
                input,
                output,
                on_info=on_info,
                progress=on_progress,
                scan_progress=on_scan,
                download_progress=_download_bar(console, quiet),
                on_note=None if quiet else (lambda line: bar.console.print(line, highlight=False, markup=False)),
                **opts,
            ),  # fmt: skip
            debug=debug,
            json_context=json_context,
        )
    finally:
        bar.stop()
    if not quiet:
        for warning in result.warnings:
            click.echo(f"stvsr: warning: {warning}", err=True)
        if result.deinterlaced:
            click.echo("deinterlaced the input (bwdif)", err=True)
        if result.cuts:
            times = ", ".join(f"{float(t):.2f}" for t in result.cut_times[:10])
            more = f" and {len(result.cuts) - 10} more" if len(result.cuts) > 10 else ""
            click.echo(f"{len(result.cuts)} scene cut(s) at {times}{more} s", err=True)
        click.echo(
            f"wrote {result.output}: {result.frames_out} frames, {float(result.duration):.3f} s, "
            f"in {result.seconds:.1f} s ({result.fps:.1f} frames/s on {result.device})",
            err=True,
        )
    if as_json:
        click.echo(json.dumps(result.to_json()))


def _check_rate_options(ctx: click.Context, opts: dict[str, Any]) -> None:
    if opts.get("fps") is not None and ctx.get_parameter_source("fps_x") is not click.core.ParameterSource.DEFAULT:
        from stvsr_cli.errors import UsageError

        _fail(UsageError("give --fps or --fps-x, not both"), debug=False, json_context=None)


def _upscale_kwargs(opts: dict[str, Any]) -> dict[str, Any]:
    """The shared model and job options as keyword arguments of ``stvsr_cli.upscale``."""
    from stvsr_cli.io.encode import EncodeSettings

    opts = dict(opts)
    opts["offline"] = opts["offline"] or None  # not given: HF_HUB_OFFLINE decides
    opts["encode"] = EncodeSettings(
        codec=opts.pop("codec"), crf=opts.pop("crf"), preset=opts.pop("preset"), pix_fmt=opts.pop("pix_fmt")
    )
    return opts


@main.command()
@click.argument("in_dir", type=click.Path(path_type=Path))
@click.argument("out_dir", type=click.Path(path_type=Path))
@model_options
@job_options
@click.option(
    "--pattern",
    "patterns",
    multiple=True,
    help="File name or relative path glob to take (repeat; default: common video extensions).",
)
@click.option("--ext", default=None, help="Write outputs with this extension (container) instead of the input's.")
@click.option("--report", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Write a JSON report.")
@click.option("--shard", "shard_spec", default=None, metavar="K/N", help="Process only shard K of N (1-based).")
@click.option(
    "--jobs", type=click.IntRange(min=1), default=None, help="Files at once (default: one per GPU, or 1)."
)
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    default=None,
    metavar="[ADDRESS]",
    help="Run the files as Ray tasks: on the cluster at ADDRESS ('auto' for the running one), or a local one.",
)
@click.option(
    "--ray-gpus-per-task", type=click.FloatRange(min=0), default=None, help="GPUs per Ray task (default 1 if any)."
)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but failures and the summary.")
@click.pass_context
def batch(ctx: click.Context, in_dir: Path, out_dir: Path, **opts: Any) -> None:
    """Upscale every video under IN_DIR into the same relative paths under OUT_DIR.

    Files whose output exists are skipped (an output only exists once complete); a file that fails
    is reported and the rest go on. Exit 0 when every file is done or skipped, 1 when any failed.
    """
    from stvsr_cli import batch as batching

    debug = _debug(ctx)
    _check_rate_options(ctx, opts)
    quiet = opts.pop("quiet")
    patterns = opts.pop("patterns") or batching.DEFAULT_PATTERNS
    ext, report, shard_spec = opts.pop("ext"), opts.pop("report"), opts.pop("shard_spec")
    jobs, ray_address, ray_gpus = opts.pop("jobs"), opts.pop("ray_address"), opts.pop("ray_gpus_per_task")
    kwargs = _upscale_kwargs(opts)
    console = _stderr()

    def make_plan():
        spec = batching.parse_shard(shard_spec) if shard_spec else None
        plan = batching.plan_batch(in_dir, out_dir, patterns=patterns, ext=ext, shard_spec=spec)
        out_dir.mkdir(parents=True, exist_ok=True)
        return plan

    plan = _guarded(make_plan, debug=debug)
    if not quiet:
        share = f" (shard {shard_spec} of {plan.total})" if shard_spec else ""
        console.print(f"{len(plan.files)} videos{share}; {plan.ignored} other files ignored")
    show = console.is_terminal and not quiet
    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console, disable=not show,
    )  # fmt: skip
    overall = bar.add_task("files", total=len(plan.files))
    current: dict[str, Any] = {}
    results: list = []

    def on_start(item) -> None:
        current[item.relative] = bar.add_task(item.relative, total=None)

    def on_progress(name: str, done: int, total: int) -> None:
        if name not in current:
            current[name] = bar.add_task(name, total=None)
        bar.update(current[name], completed=done, total=total)

    def on_result(item, result) -> None:
        results.append(result)
        if item.relative in current:
            bar.remove_task(current.pop(item.relative))
        bar.advance(overall)
        if result.status == "failed":
            bar.console.print(f"[red]failed[/red] {item.relative}: {result.error}", highlight=False, markup=True)
        elif not quiet:
            bar.console.print(f"{result.status} {item.relative}", highlight=False)

    def run():
        try:
            return run_files()
        except KeyboardInterrupt:
            raise KeyboardInterrupt("interrupted; finished files are kept: run the same command again to go on") from None

    def run_files():
        if ray_address is not None:
            return batching.run_batch_ray(
                plan, kwargs, address=None if ray_address == "local" else ray_address,
                gpus_per_task=ray_gpus, on_result=on_result,
            )  # fmt: skip
        n_jobs, devices = _batch_devices(jobs, kwargs["device"])
        return batching.run_batch(
            plan, kwargs, jobs=n_jobs, devices=devices, on_start=on_start, on_result=on_result, progress=on_progress
        )

    bar.start()
    try:
        _guarded(run, debug=debug)
    finally:
        bar.stop()
        if report is not None:
            _guarded(lambda: batching.write_report(report, plan, results), debug=debug)
    summary = batching.summarize(plan, results)
    click.echo(
        f"{summary['done']} done, {summary['skipped']} skipped, {summary['failed']} failed"
        f" ({summary['ignored_not_videos']} non-video files ignored)",
        err=True,
    )
    sys.exit(1 if summary["failed"] else 0)


def _batch_devices(jobs: int | None, device: str) -> tuple[int, list[str] | None]:
    """Files at once, and the devices to spread them over: one file per GPU when there are several."""
    if device not in ("auto", "cuda"):
        return jobs or 1, None
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < 2:
        return jobs or 1, None
    return jobs or count, [f"cuda:{i}" for i in range(count)]


def _load_model(opts: dict[str, Any], console: Console, quiet: bool):
    """The model the shared options name, loaded (downloading its weights on first use)."""
    from stvsr_cli.models.loader import load_model
    from stvsr_cli.models.registry import load_registry

    spec = load_registry().get(opts["model"])
    spec.check_factors(scale=opts["scale"], fps_x=opts["fps_x"])
    return load_model(
        spec,
        scale=opts["scale"],
        device=opts["device"],
        half=opts["half"],
        weights=opts["weights"],
        offline=opts["offline"] or None,
        progress=_download_bar(console, quiet),
    )


# How ground truth becomes the model's input, for stvsr eval and stvsr train (evaluation.DEGRADATIONS).
degradation_option = click.option(
    "--degradation",
    type=click.Choice(["standard", "blur"]),
    default="standard",
    show_default=True,
    help="Input: every fps-x-th frame (standard), or the mean of the frames around it (blur, as DAVSR).",
)


@main.command("eval")
@click.argument("data", nargs=-1, required=True, type=click.Path(path_type=Path))
@model_options
@click.option(
    "--json", "json_file", type=click.Path(path_type=Path, dir_okay=False), help="Also write the scores here."
)
@click.option("-q", "--quiet", is_flag=True, help="Print only the mean.")
@degradation_option
@click.pass_context
def eval_command(
    ctx: click.Context, data: tuple[Path, ...], json_file: Path | None, quiet: bool, degradation: str, **opts: Any
) -> None:
    """Score a model on ground-truth clips (video files, folders of videos or of frame folders).

    The protocol of the papers: input = every fps-x-th frame, bicubic-downscaled; PSNR/SSIM on Y.
    With --degradation blur each input frame is first the mean of the frames centred on it (fps-x
    of them, rounded up to odd: 3 at x2): motion blur.
    """
    from stvsr_cli.evaluation import evaluate

    console = Console(highlight=False)
    debug = _debug(ctx)

    def progress(score) -> None:
        if not quiet:
            _stderr().print(f"{score.name}: {score.psnr_y:.2f} dB, SSIM {score.ssim_y:.4f} ({score.frames} frames)")

    def run():
        model = _load_model(opts, _stderr(), quiet)
        return evaluate(
            data, model, fps_x=opts["fps_x"], window=opts["window"], overlap=opts["overlap"], on_clip=progress,
            degradation=degradation,
        )  # fmt: skip

    result = _guarded(run, debug=debug)
    blurred = ", blur degradation" if result.degradation == "blur" else ""
    table = Table(title=f"{result.model}: x{result.scale} space, x{result.fps_x} time{blurred}")
    for column in ("clip", "frames", "PSNR-Y", "SSIM-Y", "PSNR-Y input", "PSNR-Y interp."):
        table.add_column(column, justify="left" if column == "clip" else "right", overflow="fold")
    if not quiet:
        for c in result.clips:
            interp = "-" if c.interp_psnr_y is None else f"{c.interp_psnr_y:.2f}"
            table.add_row(c.name, str(c.frames), f"{c.psnr_y:.2f}", f"{c.ssim_y:.4f}", f"{c.input_psnr_y:.2f}", interp)
    table.add_row(
        "mean",
        str(sum(c.frames for c in result.clips)),
        f"{result.mean['psnr_y']:.2f}",
        f"{result.mean['ssim_y']:.4f}",
        "",
        "",
        style="bold",
    )
    console.print(table)
    if json_file is not None:
        _guarded(lambda: _write_json(json_file, result.to_json()), debug=debug)


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


@main.command("bench")
@click.option("-m", "--model", default=None, help="Registered model (random weights); default: the default model.")
@click.option("--size", type=Size(), default="480x270", show_default=True, help="LR frame size.")
@click.option(
    "--frames", type=click.IntRange(min=1), default=24, show_default=True, help="Frames of the end-to-end clip."
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--half/--no-half", default=None, help="float16 autocast (default: on for CUDA where supported).")
@click.option("--codec", default=None, help="End-to-end encoder (default: NVENC on CUDA where it opens, else x264).")
@click.option("--plain", is_flag=True, help="The baseline: float32, no pinned memory, no encoder thread.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def bench_command(ctx: click.Context, as_json: bool, **opts: Any) -> None:
    """Measure model-only and end-to-end speed and peak memory on this machine."""
    from stvsr_cli.bench import bench

    r = _guarded(
        lambda: bench(
            opts["model"], size=opts["size"], frames=opts["frames"], device=opts["device"], half=opts["half"],
            codec=opts["codec"], plain=opts["plain"],
        ),  # fmt: skip
        debug=_debug(ctx),
    )
    if as_json:
        click.echo(json.dumps(r.to_json()))
        return
    click.echo(
        f"{r.model} {r.width}x{r.height} -> {r.out_width}x{r.out_height} on {r.device} ({r.device_name}), {r.precision}"
        f"{', plain baseline' if r.plain else ''}{', random weights' if r.random_weights else ''}\n"
        f"  model only: {r.model_useful_fps:.2f} useful output frames/s, {r.model_useful_mpix_s:.1f} Mpixel/s "
        f"({r.model_fps:.2f} frames/s counting the overlap; "
        f"{r.model_seconds_per_call:.3f} s per {r.window}-frame window)\n"
        f"  end to end: {r.e2e_fps:.2f} output frames/s ({r.e2e_frames} frames in {r.e2e_seconds:.1f} s, "
        f"decode + model + {r.codec})\n"
        f"  peak memory: {r.peak_memory_gib:.2f} GiB ({r.memory})"
    )


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


@main.command("compare")
@click.argument("input", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-m", "--model", "models", multiple=True, help="A model to show (repeat); default: the default model.")
@click.option(
    "--time", type=Seconds(), default=None, help="Show the in-between frame nearest this time (default: the middle)."
)
@click.option("--crop", type=Box(), default=None, help="Output-pixel box X,Y,W,H (default: 256x256 in the centre).")
@click.option("--profile", is_flag=True, help="Add a temporal profile strip (the crop's middle row over time).")
@click.option("-s", "--scale", type=click.IntRange(1, 16), default=4, show_default=True)
@click.option("-x", "--fps-x", type=click.IntRange(1, 64), default=2, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--offline", is_flag=True, default=None, help="Never download weights.")
@click.pass_context
def compare_command(ctx: click.Context, input: Path, output: Path, **opts: Any) -> None:
    """Write OUTPUT.png: the same crop from bicubic and each model, side by side, labelled."""
    from stvsr_cli.compare import compare

    opts["offline"] = opts["offline"] or None
    r = _guarded(lambda: compare(input, output, **opts), debug=_debug(ctx))
    click.echo(
        f"wrote {r.path} ({r.width}x{r.height}): output frame {r.frame} at {float(r.time):.3f} s, "
        f"crop {','.join(map(str, r.crop))}, {', '.join(r.models)}"
    )


@main.command("train")
@click.option("--arch", default=None, help="Architecture key (see `stvsr models`), e.g. zsm.")
@click.option("--params", default="{}", help='Constructor params as JSON, e.g. \'{"nf": 16, "back_rbs": 4}\'.')
@click.option("--data", multiple=True, required=True, type=click.Path(path_type=Path), help="Training clips (repeat).")
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False), help="Run folder.")
@click.option("--name", default=None, help="Model name for the export (default: the --out folder's name).")
@click.option("--steps", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--patch", type=click.IntRange(min=8), default=128, show_default=True, help="HR patch size.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=4e-4, show_default=True)
@click.option("--frames-in", type=click.IntRange(min=2), default=4, show_default=True, help="Input frames per sample.")
@click.option("-x", "--fps-x", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("-s", "--scale", type=click.IntRange(min=1), default=4, show_default=True)
@degradation_option
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--amp",
    type=click.Choice(["bf16", "fp16", "none"]),
    default=None,
    help="Mixed precision (default: bf16 or fp16 on CUDA, none on the CPU).",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--val", multiple=True, type=click.Path(path_type=Path), help="Validation clips (repeat).")
@click.option("--val-every", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--save-every", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--log-every", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--init", default=None, help="Start from a registered model's weights (fine-tuning).")
@click.option(
    "--eval",
    "eval_data",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Clips for the final evaluation against classic, in the model card.",
)
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Keep decoded frames here between runs.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-q", "--quiet", is_flag=True)
@click.pass_context
def train_command(ctx: click.Context, **opts: Any) -> None:
    """Train an architecture on a folder of videos (or frame folders); export weights, a model card
    and a registry entry into --out."""
    from stvsr_cli.training.data import load_frames
    from stvsr_cli.training.export import export
    from stvsr_cli.training.trainer import TrainConfig, Trainer

    debug, quiet, resume = _debug(ctx), opts.pop("quiet"), opts.pop("resume")
    eval_data = [str(p) for p in opts.pop("eval_data")]
    try:
        params = json.loads(opts.pop("params"))
        if not isinstance(params, dict):
            raise ValueError
    except ValueError:
        raise click.BadParameter("must be a JSON object", param_hint="--params") from None
    out: Path = opts["out"]
    config = TrainConfig(
        **{k: v for k, v in opts.items() if k not in ("data", "val", "out", "cache_dir", "name")},
        params=params,
        data=[str(p) for p in opts["data"]],
        val=[str(p) for p in opts["val"]],
        out=str(out),
        name=opts["name"] or out.resolve().name,
        cache_dir=str(opts["cache_dir"]) if opts["cache_dir"] else None,
    )
    console = _stderr()
    bar = Progress(
        TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
        TextColumn("val {task.fields[psnr]}"), TextColumn("{task.fields[rate]} steps/s"), TimeRemainingColumn(),
        console=console, disable=quiet or not console.is_terminal,
    )  # fmt: skip
    task = bar.add_task("train", total=config.steps, loss="-", psnr="-", rate="-")
    last_psnr = ["-"]

    def on_log(entry) -> None:
        if entry.val_psnr is not None:
            last_psnr[0] = f"{entry.val_psnr:.2f} dB"
        rate = f"{entry.step / entry.seconds:.2f}" if entry.seconds else "-"
        bar.update(task, completed=entry.step, loss=f"{entry.loss:.4f}", psnr=last_psnr[0], rate=rate)
        if not quiet and not console.is_terminal:
            val = f", val {entry.val_psnr:.2f} dB" if entry.val_psnr is not None else ""
            click.echo(f"step {entry.step}/{entry.steps}: loss {entry.loss:.5f}, lr {entry.lr:.2e}{val}", err=True)

    # A kill (SIGTERM), and Ctrl-C even where a shell started us with it ignored, stop the run the
    # same way: the trainer saves a checkpoint that --resume continues from.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)

    def run():
        trainer = Trainer(config, resume=resume)
        cache = load_frames(config.data, Path(config.cache_dir) if config.cache_dir else None)
        if not quiet:
            click.echo(
                f"{config.arch} {json.dumps(config.params)}: {sum(p.numel() for p in trainer.parameters):,} parameters; "
                f"{len(cache.clips)} clips, {cache.frame_count} frames; from step {trainer.step}",
                err=True,
            )
        with bar:
            try:
                trainer.run(cache, on_log)
            except KeyboardInterrupt:
                raise KeyboardInterrupt(f"stopped at step {trainer.step}; continue with --resume") from None
        return export(trainer, cache, eval_data or None)

    result = _guarded(run, debug=debug)
    click.echo(f"wrote {result.weights}, {result.card}, {result.registry}")
    if result.result is not None:
        click.echo(
            f"eval: {result.result.mean['psnr_y']:.2f} dB / {result.result.mean['ssim_y']:.4f} "
            f"(classic {result.baseline.mean['psnr_y']:.2f} dB / {result.baseline.mean['ssim_y']:.4f})"
        )


def _write_json(path: Path, data: Any) -> None:
    """Write beside the target, then rename: never a half-written file."""
    tmp = path.with_name(f".{path.name}.partial")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StvsrError(f"cannot write {path}: {exc.strerror or exc}") from None


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.pass_context
def models(ctx: click.Context, as_json: bool) -> None:
    """List the registered models."""
    from stvsr_cli import hub
    from stvsr_cli.models.registry import load_registry

    registry = _guarded(load_registry, debug=_debug(ctx))
    rows = [
        {
            "name": spec.name,
            "arch": spec.arch,
            "scale": "any" if spec.scales is None else list(spec.scales),
            "fps_x": "any" if spec.fps_x is None or spec.arbitrary_times else list(spec.fps_x),
            "times": "any" if spec.arbitrary_times else "fixed",
            "available": hub.available(spec),
            "weights": spec.weights or "none needed",
            "license": spec.license,
            "default": spec.name == registry.default,
            "description": spec.description,
        }
        for spec in registry.models.values()
    ]
    if as_json:
        click.echo(json.dumps(rows))
        return
    table = Table(title="stvsr models")
    for column in ("name", "arch", "scale", "time x", "weights", "licence"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row["name"] + (" (default)" if row["default"] else ""),
            row["arch"],
            _factors(row["scale"]),
            _factors(row["fps_x"]) + (", any --fps" if row["times"] == "any" else ""),
            "built in" if row["weights"] == "none needed" else ("local" if row["available"] else "not downloaded"),
            row["license"],
        )
    Console().print(table)


def _factors(value: Any) -> str:
    return value if isinstance(value, str) else ", ".join(map(str, value))


def _download_bar(console: Console, quiet: bool) -> Callable[[int, int | None], None] | None:
    """A progress callback that shows a download bar on a terminal (started on the first bytes)."""
    if quiet or not console.is_terminal:
        return None
    bar = Progress(
        TextColumn("downloading weights"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
        console=console, transient=True,
    )  # fmt: skip
    task = bar.add_task("download", total=None)

    def update(done: int, total: int | None) -> None:
        bar.start()
        bar.update(task, completed=done, total=total)
        if total is not None and done >= total:
            bar.stop()

    return update


@main.group()
def weights() -> None:
    """Download, import, verify and locate model weights."""


def _spec(ctx: click.Context, name: str):
    from stvsr_cli.models.registry import load_registry

    return _guarded(lambda: load_registry().get(name), debug=_debug(ctx))


def _debug(ctx: click.Context) -> bool:
    return bool((ctx.find_root().obj or {}).get("debug", False))


@weights.command("download")
@click.argument("name")
@click.pass_context
def weights_download(ctx: click.Context, name: str) -> None:
    """Fetch, verify and cache the weights of model NAME."""
    from stvsr_cli import hub

    spec = _spec(ctx, name)
    if spec.weights is None:
        click.echo(f"model '{name}' needs no weights")
        return
    path = _guarded(
        lambda: hub.weights_file(spec, offline=False, progress=_download_bar(_stderr(), False)), debug=_debug(ctx)
    )
    click.echo(str(path))


@weights.command("import")
@click.argument("name")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.pass_context
def weights_import(ctx: click.Context, name: str, file: Path) -> None:
    """Check FILE against model NAME's registered hash, convert it, put it in the cache."""
    from stvsr_cli import hub

    spec = _spec(ctx, name)
    click.echo(str(_guarded(lambda: hub.import_weights(spec, file), debug=_debug(ctx))))


@weights.command("verify")
@click.argument("name", required=False)
@click.pass_context
def weights_verify(ctx: click.Context, name: str | None) -> None:
    """Re-check the weights of model NAME (or of every model); exit 1 if any are damaged."""
    from stvsr_cli import hub
    from stvsr_cli.models.registry import load_registry

    registry = _guarded(load_registry, debug=_debug(ctx))
    specs = [_spec(ctx, name)] if name else list(registry.models.values())
    results = _guarded(lambda: [(spec.name, hub.verify(spec)) for spec in specs], debug=_debug(ctx))
    for model, status in results:
        click.echo(f"{model}: {status}")
    if any(status.startswith("damaged") for _, status in results):
        sys.exit(1)


@weights.command("path")
@click.argument("name")
@click.pass_context
def weights_path(ctx: click.Context, name: str) -> None:
    """Print where the weights of model NAME are (exit 1 if they are not there yet)."""
    from stvsr_cli import hub

    spec = _spec(ctx, name)
    click.echo(str(_guarded(lambda: hub.local_path(spec), debug=_debug(ctx))))


if __name__ == "__main__":  # pragma: no cover
    main()
