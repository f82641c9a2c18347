"""What the ``stvsr`` command shows: progress bars on a terminal (a line now and then elsewhere),
one-line summaries and tables. Messages go to stderr, so that stdout stays for ``--json``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

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

from stvsr_cli.io.timing import rate_text


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


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


def download_bar(console: Console, quiet: bool) -> Callable[[int, int | None], None] | None:
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


class UpscaleDisplay:
    """``stvsr upscale``: what goes in and comes out, the scene scan and the frames as they go,
    notes, and at the end what was written."""

    def __init__(self, quiet: bool) -> None:
        self.console = stderr_console()
        self.quiet = quiet
        show_bar = self.console.is_terminal and not quiet
        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), FpsColumn(), TimeRemainingColumn(),
            console=self.console, disable=not show_bar,
        )  # fmt: skip
        self._scan = self.bar.add_task("finding cuts", total=None, visible=False)
        self._task = self.bar.add_task("upscaling", total=None)
        self._plain = PlainProgress("upscaling") if not show_bar and not quiet else None

    def info(self, info, job, grid) -> None:
        if self.quiet:
            return
        scale = job.options.scale
        vfr = ", variable rate" if info.variable_frame_rate else ""
        click.echo(
            f"{info.path.name}: {info.width}x{info.height}, {rate_text(info.frame_rate)} fps{vfr}, "
            f"{info.frame_count} frames -> {info.width * scale}x{info.height * scale}, "
            f"{rate_text(grid.rate)} fps, {grid.count} frames (model {job.spec.name})",
            err=True,
        )
        if note := job.spec.license_note():
            click.echo(f"stvsr: note: {note}", err=True)
        self.bar.start()

    def progress(self, done: int, total: int) -> None:
        self.bar.update(self._task, completed=done, total=total)
        if self._plain is not None:
            self._plain.update(done, total)

    def scan(self, done: int, total: int) -> None:
        self.bar.update(self._scan, completed=done, total=total, visible=True)

    def note(self, line: str) -> None:
        if not self.quiet:
            self.bar.console.print(line, highlight=False, markup=False)

    def stop(self) -> None:
        self.bar.stop()

    def summary(self, result) -> None:
        if self.quiet:
            return
        for warning in result.warnings:
            click.echo(f"stvsr: warning: {warning}", err=True)
        if result.pulldown_removed:
            click.echo(
                f"undid 3:2 pulldown: the film's own frames, {result.frames_in} at {float(result.rate_in):.3f} fps "
                "(fieldmatch + decimate)", err=True,
            )  # fmt: skip
        if result.deinterlaced:
            click.echo("deinterlaced the input (bwdif)", err=True)
        cleaned = [f.split("=")[0] for f in result.cleanup if f.startswith(("deflicker", "fftdnoiz"))]
        if cleaned:
            click.echo(f"cleaned the frames before the model ({', '.join(cleaned)})", err=True)
        if result.grain:
            strongest = max(max(profile["sigma"]) for profile in result.grain.values())
            click.echo(f"grain kept: measured in {len(result.grain)} shot(s), up to {strongest:.1f} levels", err=True)
        if result.cuts:
            times = ", ".join(f"{float(t):.2f}" for t in result.cut_times[:10])
            more = f" and {len(result.cuts) - 10} more" if len(result.cuts) > 10 else ""
            click.echo(f"{len(result.cuts)} scene cut(s) at {times}{more} s", err=True)
        if result.dedup:
            patterns = ", ".join(result.repeat_patterns) or "no regular pattern"
            click.echo(
                f"dropped {len(result.repeated_frames)} repeated frame(s) ({patterns}) and re-timed the rest", err=True
            )
        click.echo(
            f"wrote {result.output}: {result.frames_out} frames, {float(result.duration):.3f} s, "
            f"in {result.seconds:.1f} s ({result.fps:.1f} frames/s on {result.device})",
            err=True,
        )


class BatchDisplay:
    """``stvsr batch``: a bar for the files and one for each file in progress; a line per file done."""

    def __init__(self, console: Console, files: int, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=console, disable=not (console.is_terminal and not quiet),
        )  # fmt: skip
        self._overall = self.bar.add_task("files", total=files)
        self._current: dict[str, Any] = {}
        self.results: list = []

    def events(self) -> dict[str, Callable]:
        """The callbacks ``batch.run`` takes."""
        return {"on_start": self.start, "on_result": self.result, "progress": self.progress}

    def start(self, item) -> None:
        self._current[item.relative] = self.bar.add_task(item.relative, total=None)

    def progress(self, name: str, done: int, total: int) -> None:
        if name not in self._current:
            self._current[name] = self.bar.add_task(name, total=None)
        self.bar.update(self._current[name], completed=done, total=total)

    def result(self, item, result) -> None:
        self.results.append(result)
        if item.relative in self._current:
            self.bar.remove_task(self._current.pop(item.relative))
        self.bar.advance(self._overall)
        if result.status == "failed":
            self.bar.console.print(f"[red]failed[/red] {item.relative}: {result.error}", highlight=False, markup=True)
        elif not self.quiet:
            self.bar.console.print(f"{result.status} {item.relative}", highlight=False)


def eval_table(result, quiet: bool) -> Table:
    """Scores per clip (only the mean when ``quiet``)."""
    blurred = "" if result.degradation == "standard" else f", {result.degradation} degradation"
    table = Table(title=f"{result.model}: x{result.scale} space, x{result.fps_x} time{blurred}")
    for column in ("clip", "frames", "PSNR-Y", "SSIM-Y", "PSNR-Y input", "PSNR-Y interp."):
        table.add_column(column, justify="left" if column == "clip" else "right", overflow="fold")
    if not quiet:
        for c in result.clips:
            interp = "-" if c.interp_psnr_y is None else f"{c.interp_psnr_y:.2f}"
            table.add_row(c.name, str(c.frames), f"{c.psnr_y:.2f}", f"{c.ssim_y:.4f}", f"{c.input_psnr_y:.2f}", interp)
    frames = str(sum(c.frames for c in result.clips))
    table.add_row("mean", frames, f"{result.mean['psnr_y']:.2f}", f"{result.mean['ssim_y']:.4f}", "", "", style="bold")
    return table


def bench_text(r) -> str:
    return (
        f"{r.model} {r.width}x{r.height} -> {r.out_width}x{r.out_height} on {r.device} ({r.device_name}), {r.precision}"
        f"{', plain baseline' if r.plain else ''}{', random weights' if r.random_weights else ''}\n"
        f"  speed-ups: {_speedups(r)}\n"
        f"  model only: {r.model_useful_fps:.2f} useful output frames/s, {r.model_useful_mpix_s:.1f} Mpixel/s "
        f"({r.model_fps:.2f} frames/s counting the overlap; "
        f"{r.model_seconds_per_call:.3f} s per call of {r.batch_windows} x {r.window}-frame window)\n"
        f"  arithmetic limit: {_limit(r)}\n"
        f"  end to end: {r.e2e_fps:.2f} output frames/s ({r.e2e_frames} frames in {r.e2e_seconds:.1f} s, "
        f"decode + model + {r.codec})\n"
        f"  seconds per stage (summed over threads): "
        f"{', '.join(f'{stage} {seconds:.2f}' for stage, seconds in r.stage_seconds.items())}\n"
        f"  peak memory: {r.peak_memory_gib:.2f} GiB ({r.memory})"
    )


def _speedups(r) -> str:
    on = [name for name, used in (("channels_last", r.channels_last), (f"compile ({r.compile_mode})", r.compile_mode))
          if used]  # fmt: skip
    if r.batch_windows > 1:
        on.append(f"{r.batch_windows} windows a call")
    on += [name for name, used in (("copy stream", r.copy_stream), ("colour on the device", r.device_colour)) if used]
    if r.deform_conv:
        on.append(f"deformable convolution: {r.deform_conv}")
    return ", ".join(on) or "none"


def _limit(r) -> str:
    if r.limit_useful_fps is None:
        why = "the FLOP counter cannot see into compiled code" if r.compile_mode else "no products or convolutions"
        return f"not counted ({why}); matrix products here: {r.peak_tflop_s:.1f} TFLOP/s"
    return (
        f"{r.flops_per_useful_frame / 1e9:.1f} GFLOP per useful frame at {r.peak_tflop_s:.1f} TFLOP/s (matrix "
        f"products here) = {r.limit_useful_fps:.1f} frames/s; the model reaches {r.percent_of_limit:.1f} %"
    )


# The licence column's width: the registry's ``license_short`` names fit; longer text ends in "...".
LICENCE_WIDTH = 16


def models_table(rows: list[dict[str, Any]]) -> Table:
    """One line per model at 80 columns: the licence in short (in full in ``--json`` and the cards),
    the default model starred."""
    table = Table(title="stvsr models", caption="* the default model; full licences: stvsr models --json")
    names = [row["name"] + (" *" if row["default"] else "") for row in rows]
    table.add_column("name", no_wrap=True, min_width=max(map(len, names), default=4))  # never cut: it is typed
    for column in ("arch", "scale", "time x", "weights"):
        table.add_column(column, overflow="fold")
    table.add_column("licence", overflow="fold")
    for row, name in zip(rows, names, strict=True):
        table.add_row(
            name,
            row["arch"],
            _factors(row["scale"]),
            _factors(row["fps_x"]) + (", --fps" if row["times"] == "any" else ""),
            "built in" if row["weights"] == "none needed" else ("local" if row["available"] else "to download"),
            _clip(row["license_short"], LICENCE_WIDTH),
        )
    return table


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _factors(value: Any) -> str:
    return value if isinstance(value, str) else ", ".join(map(str, value))


class TrainDisplay:
    """``stvsr train``: a bar with the loss, the last validation PSNR and the speed on a terminal; a
    line per log entry elsewhere."""

    def __init__(self, console: Console, steps: int, quiet: bool) -> None:
        self.console, self.quiet = console, quiet
        self.bar = Progress(
            TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
            TextColumn("val {task.fields[psnr]}"), TextColumn("{task.fields[rate]} steps/s"), TimeRemainingColumn(),
            console=console, disable=quiet or not console.is_terminal,
        )  # fmt: skip
        self._task = self.bar.add_task("train", total=steps, loss="-", psnr="-", rate="-")
        self._psnr = "-"

    def log(self, entry) -> None:
        if entry.val_psnr is not None:
            self._psnr = f"{entry.val_psnr:.2f} dB"
        rate = f"{entry.step / entry.seconds:.2f}" if entry.seconds else "-"
        self.bar.update(self._task, completed=entry.step, loss=f"{entry.loss:.4f}", psnr=self._psnr, rate=rate)
        if not self.quiet and not self.console.is_terminal:
            val = f", val {entry.val_psnr:.2f} dB" if entry.val_psnr is not None else ""
            click.echo(f"step {entry.step}/{entry.steps}: loss {entry.loss:.5f}, lr {entry.lr:.2e}{val}", err=True)


def show_forecasts(forecasts: list, as_json: bool) -> None:
    """Each forecast's lines on stderr (JSON on stdout with ``as_json``); for several, their sum."""
    from stvsr_cli.forecast import TIME_RANGE, duration_text, forecast_lines, size_text

    for f in forecasts:
        if as_json:
            click.echo(json.dumps(f.to_json()))
        for line in forecast_lines(f):
            click.echo(line, err=True)
    if len(forecasts) > 1:
        total = sum(f.predicted_seconds for f in forecasts)
        size = sum(f.predicted_bytes for f in forecasts)
        click.echo(
            f"all {len(forecasts)} files: {duration_text(total)} ({duration_text(total * TIME_RANGE[0])} to "
            f"{duration_text(total * TIME_RANGE[1])}), about {size_text(size)}",
            err=True,
        )
