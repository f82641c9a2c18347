"""The ``stvsr`` command: parse options, call the library, show progress, map errors to exit codes.

Exit codes: 0 success, 1 runtime error, 2 usage error, 130 interrupted. Errors are one line on
stderr (a traceback only with ``--debug``); ``--json`` puts one JSON object on stdout. The shared
options are in ``cmdoptions``, what is shown in ``display``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console

from stvsr_cli import __version__
from stvsr_cli.cmdoptions import (
    Box,
    Seconds,
    Size,
    batch_options,
    deflicker_option,
    degradation_option,
    denoise_option,
    job_options,
    max_memory_option,
    model_options,
    plan_option,
    speed_from,
    speed_options,
    train_options,
    upscale_options,
)
from stvsr_cli.display import (
    BatchDisplay,
    TrainDisplay,
    UpscaleDisplay,
    bench_text,
    download_bar,
    eval_table,
    models_table,
    show_forecasts,
    stderr_console,
)
from stvsr_cli.errors import StvsrError, UsageError

EXIT_INTERRUPTED = 130


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stvsr")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Space-time video super-resolution: more pixels and more frames in one pass."""
    ctx.obj = {"debug": debug}


@main.command()
@click.argument("input", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@model_options
@speed_options
@job_options
@click.option(
    "--restart", is_flag=True, help="Discard the segments an interrupted run of this output left, and start over."
)
@click.option("-y", "--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@plan_option
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary line on stdout.")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def upscale(ctx: click.Context, input: Path, output: Path, **opts: Any) -> None:
    """Upscale INPUT into OUTPUT: --scale times the size, --fps-x times the frame rate."""
    from stvsr_cli.api import upscale as run_upscale

    debug = opts.pop("debug") or _debug(ctx)
    quiet, as_json, plan = opts.pop("quiet"), opts.pop("as_json"), opts.pop("plan")
    _check_rate_options(ctx, opts)
    json_context = {"input": str(input), "output": str(output)} if as_json else None
    options = _guarded(lambda: upscale_options(opts), debug=debug, json_context=json_context)
    if plan:
        from stvsr_cli.forecast import forecast

        return show_forecasts([_guarded(lambda: forecast(input, output, options), debug=debug)], as_json)
    show = UpscaleDisplay(quiet)

    def run():
        return run_upscale(
            input, output, options, on_info=show.info, progress=show.progress, scan_progress=show.scan,
            download_progress=download_bar(show.console, quiet), on_note=show.note,
        )  # fmt: skip

    try:
        result = _guarded(run, debug=debug, json_context=json_context)
    finally:
        show.stop()
    show.summary(result)
    if as_json:
        click.echo(json.dumps(result.to_json()))


def _check_rate_options(ctx: click.Context, opts: dict[str, Any]) -> None:
    if opts.get("fps") is not None and ctx.get_parameter_source("fps_x") is not click.core.ParameterSource.DEFAULT:
        _fail(UsageError("give --fps or --fps-x, not both"), debug=False, json_context=None)


@main.command()
@click.argument("in_dir", type=click.Path(path_type=Path))
@click.argument("out_dir", type=click.Path(path_type=Path))
@model_options
@speed_options
@job_options
@batch_options
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
    quiet, report, shard_text = opts.pop("quiet"), opts.pop("report"), opts.pop("shard_spec")
    patterns, ext = opts.pop("patterns") or batching.DEFAULT_PATTERNS, opts.pop("ext")
    jobs, ray_address, ray_gpus = opts.pop("jobs"), opts.pop("ray_address"), opts.pop("ray_gpus_per_task")
    forecast_only = opts.pop("plan")
    options = _guarded(lambda: upscale_options(opts), debug=debug)
    console = stderr_console()
    plan = _guarded(
        lambda: batching.open_batch(in_dir, out_dir, patterns=patterns, ext=ext, shard_text=shard_text), debug=debug
    )
    if forecast_only:
        return show_forecasts(_guarded(lambda: batching.forecasts(plan, options), debug=debug), as_json=False)
    if not quiet:
        share = f" (shard {shard_text} of {plan.total})" if shard_text else ""
        console.print(f"{len(plan.files)} videos{share}; {plan.ignored} other files ignored")
        if note := _guarded(lambda: batching.license_note(options), debug=debug):
            console.print(f"stvsr: note: {note}", highlight=False)
    show = BatchDisplay(console, len(plan.files), quiet)
    show.bar.start()
    try:
        _guarded(
            lambda: batching.run(plan, options, jobs=jobs, ray_address=ray_address, ray_gpus=ray_gpus, **show.events()),
            debug=debug,
        )
    finally:
        show.bar.stop()
        if report is not None:
            _guarded(lambda: batching.write_report(report, plan, show.results), debug=debug)
    summary = batching.summarize(plan, show.results)
    click.echo(
        f"{summary['done']} done, {summary['skipped']} skipped, {summary['failed']} failed"
        f" ({summary['ignored_not_videos']} non-video files ignored)",
        err=True,
    )
    sys.exit(1 if summary["failed"] else 0)


@main.command("eval")
@click.argument("data", nargs=-1, required=True, type=click.Path(path_type=Path))
@model_options
@click.option(
    "--json", "json_file", type=click.Path(path_type=Path, dir_okay=False), help="Also write the scores here."
)
@click.option("-q", "--quiet", is_flag=True, help="Print only the mean.")
@degradation_option
@click.option("--degradation-seed", type=int, default=0, show_default=True, help="Seeds --degradation film.")
@denoise_option
@deflicker_option
@click.pass_context
def eval_command(
    ctx: click.Context, data: tuple[Path, ...], json_file: Path | None, quiet: bool, degradation: str, **opts: Any
) -> None:
    """Score a model on ground-truth clips (video files, folders of videos or of frame folders).

    The protocol of the papers: input = every fps-x-th frame, bicubic-downscaled; PSNR/SSIM on Y.
    With --degradation blur each input frame is first the mean of the frames centred on it (fps-x
    of them, rounded up to odd: 3 at x2): motion blur. With --degradation film the input frames
    look like an old film transfer, drawn from --degradation-seed (fixed, so runs compare).
    --denoise and --deflicker clean the input first, as upscale does.
    """
    from stvsr_cli.api import load_upscaler
    from stvsr_cli.evaluation import evaluate
    from stvsr_cli.io.filters import FrameFilters

    debug, degradation_seed = _debug(ctx), opts.pop("degradation_seed")
    cleanup = FrameFilters(denoise=opts.pop("denoise"), deflicker=opts.pop("deflicker"))

    def progress(score) -> None:
        if not quiet:
            stderr_console().print(
                f"{score.name}: {score.psnr_y:.2f} dB, SSIM {score.ssim_y:.4f} ({score.frames} frames)"
            )

    def run():
        options = upscale_options(opts)
        return evaluate(
            data, load_upscaler(options, progress=download_bar(stderr_console(), quiet)), fps_x=options.fps_x,
            window=options.window, overlap=options.overlap, on_clip=progress, degradation=degradation,
            degradation_seed=degradation_seed, max_memory=options.max_memory, cleanup=cleanup,
        )  # fmt: skip

    result = _guarded(run, debug=debug)
    Console(highlight=False).print(eval_table(result, quiet))
    if json_file is not None:
        _guarded(lambda: _write_json(json_file, result.to_json()), debug=debug)


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
@click.option(
    "--device-colour/--no-device-colour",
    default=None,
    help="End to end: the encoder's YUV made on the model's device (default: off, until measured).",
)
@speed_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def bench_command(ctx: click.Context, as_json: bool, **opts: Any) -> None:
    """Measure model-only and end-to-end speed and peak memory on this machine."""
    from stvsr_cli.bench import bench

    keys = ("size", "frames", "device", "half", "codec", "plain", "device_colour")
    r = _guarded(lambda: bench(opts["model"], speed=speed_from(opts), **{k: opts[k] for k in keys}), debug=_debug(ctx))
    click.echo(json.dumps(r.to_json()) if as_json else bench_text(r))


@main.command("compare")
@click.argument("input", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "-m",
    "--model",
    "models",
    multiple=True,
    help="A column (repeat): a model, with optional clean-up suffixes +denoise=LEVEL, +deflicker, +grain "
    "(e.g. stvun-gpu+denoise=medium+grain); default: the default model.",
)
@click.option(
    "--time", type=Seconds(), default=None, help="Show the in-between frame nearest this time (default: the middle)."
)
@click.option(
    "--crop",
    type=Box(),
    default=None,
    help="Output-pixel box X,Y,W,H (default: 256x256 where the frame has most detail).",
)
@click.option("--profile", is_flag=True, help="Add a temporal profile strip (the crop's middle row over time).")
@max_memory_option
@click.option("-s", "--scale", type=click.IntRange(1, 16), default=4, show_default=True)
@click.option("-x", "--fps-x", type=click.IntRange(1, 64), default=2, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--offline", is_flag=True, default=None, help="Never download weights.")
@click.pass_context
def compare_command(ctx: click.Context, input: Path, output: Path, **opts: Any) -> None:
    """Write OUTPUT.png: the same crop from bicubic and each model (with its clean-up), side by side, labelled."""
    from stvsr_cli.compare import compare

    opts["offline"] = opts["offline"] or None
    r = _guarded(lambda: compare(input, output, **opts), debug=_debug(ctx))
    click.echo(
        f"wrote {r.path} ({r.width}x{r.height}): output frame {r.frame} at {float(r.time):.3f} s, "
        f"crop {','.join(map(str, r.crop))}{' (most detail)' if opts['crop'] is None else ''}, {', '.join(r.models)}"
    )


@main.command("train")
@train_options
@click.pass_context
def train_command(ctx: click.Context, **opts: Any) -> None:
    """Train an architecture on a folder of videos (or frame folders); export weights, a model card
    and a registry entry into --out."""
    from stvsr_cli.training.data import load_frames
    from stvsr_cli.training.export import export
    from stvsr_cli.training.licences import is_permissive
    from stvsr_cli.training.signals import stop_on_signals
    from stvsr_cli.training.trainer import TrainConfig, Trainer, amp_slowdown_note

    debug, quiet, resume = _debug(ctx), opts.pop("quiet"), opts.pop("resume")
    permissive_only = opts.pop("permissive_only")
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
    console = stderr_console()
    show = TrainDisplay(console, config.steps, quiet)
    stop_on_signals()

    def run():
        trainer = Trainer(config, resume=resume)
        note = amp_slowdown_note(trainer.amp, trainer.device)
        if note:  # even with --quiet: it can cost hours
            click.echo(f"stvsr: note: {note}", err=True)
        keep = is_permissive if permissive_only else None
        cache = load_frames(config.data, Path(config.cache_dir) if config.cache_dir else None, keep)
        if cache.left_out:
            click.echo(f"stvsr: left out (not permissively licensed): {', '.join(cache.left_out)}", err=True)
        if not quiet:
            click.echo(
                f"{config.arch} {json.dumps(config.params)}: {sum(p.numel() for p in trainer.parameters):,} parameters; "
                f"{len(cache.clips)} clips, {cache.frame_count} frames, {len(cache.held_out)} held out (val_unseen); "
                f"from step {trainer.step}",
                err=True,
            )
        with show.bar:
            try:
                trainer.run(cache, show.log)
            except KeyboardInterrupt:
                raise KeyboardInterrupt(f"stopped at step {trainer.step}; continue with --resume") from None
        return export(trainer, cache, eval_data or None)

    for line in _guarded(run, debug=debug).summary_lines():
        click.echo(line)


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
            "tiles": "exact" if spec.architecture.exact_tiles else "approximate: a layer pools over the whole frame",
            "available": hub.available(spec),
            "weights": spec.weights or "none needed",
            "license": spec.license,
            "license_short": spec.short_license,
            "default": spec.name == registry.default,
            "description": spec.description,
        }
        for spec in registry.models.values()
    ]
    if as_json:
        click.echo(json.dumps(rows))
        return
    Console().print(models_table(rows))


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
    if spec.weights is None and not spec.architecture.learned:
        click.echo(f"model '{name}' needs no weights")
        return
    path = _guarded(
        lambda: hub.weights_file(spec, offline=False, progress=download_bar(stderr_console(), False)), debug=_debug(ctx)
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
