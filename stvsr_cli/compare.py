"""``stvsr compare``: look before reading numbers. One PNG: the same crop of an in-between frame
from bicubic (``classic``) and each model, side by side and labelled; optionally a temporal
profile under each (one pixel row stacked over time, as in the TPSR paper), where flicker,
ghosting and window seams show at a glance. A column may add upscale's clean-up to its model
(``stvun-gpu+denoise=medium+grain``); the default crop is where the input frame has the most detail."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from stvsr_cli.errors import UsageError
from stvsr_cli.io.colour import to_uint8
from stvsr_cli.io.decode import VideoInfo, VideoReader, probe
from stvsr_cli.io.filters import DENOISE_LEVELS, FrameFilters, filter_arrays
from stvsr_cli.models.loader import load_model
from stvsr_cli.models.registry import Registry, load_registry
from stvsr_cli.pipeline.grain import add_grain, luma, measure_shots
from stvsr_cli.pipeline.grey import grey_windows
from stvsr_cli.pipeline.memory import budgeted_runner, parse_size
from stvsr_cli.pipeline.run import run_windows
from stvsr_cli.pipeline.source import scan
from stvsr_cli.pipeline.windows import WindowPlan, plan_windows

BASELINE = "classic"
PROFILE_RADIUS = 16  # input frames on each side of the chosen time in the temporal profile
PROFILE_ROW_HEIGHT = 3  # pixels per output frame in the profile strip
LABEL_HEIGHT = 22
GAP = 8
CROP_SIZE = 256  # output pixels on a side of the default crop
CROP_STEPS = 4  # default crop candidates every 1/CROP_STEPS of the crop's size
DETAIL_PERCENTILE = 99  # each pixel's detail clipped at this percentile of the frame's
COLUMN_FORMS = "MODEL, then any of +denoise=off|light|medium|strong, +deflicker, +grain (classic+deflicker+grain)"


@dataclass(frozen=True)
class CompareResult:
    path: Path
    width: int
    height: int
    models: list[str]
    frame: int  # output frame index shown
    time: Fraction  # its time in seconds from the first frame
    crop: tuple[int, int, int, int]  # x, y, w, h in output pixels


@dataclass(frozen=True)
class Column:
    """One column of the picture, as ``-m`` spells it (``stvun-gpu+denoise=medium+grain``): a model,
    the clean-up on its input (``filters``: denoise, deflicker) and whether the input's grain is
    added to its output (``grain``, upscale's ``--grain keep``)."""

    spec: str  # as given: the column's label
    model: str
    filters: FrameFilters
    grain: bool


def parse_column(spec: str) -> Column:
    """``spec``'s model and clean-up; anything but ``COLUMN_FORMS`` is a ``UsageError``."""
    model, *suffixes = spec.split("+")
    cleanup: dict[str, str | bool] = {}
    for suffix in suffixes:
        key, is_set, value = suffix.partition("=")
        known = (key in ("deflicker", "grain") and not is_set) or (key == "denoise" and value in DENOISE_LEVELS)
        if not known or key in cleanup:
            problem = f"'{suffix}' twice" if known else f"unknown clean-up '{suffix}'"
            raise UsageError(f"--model '{spec}': {problem}", hint=f"accepted: {COLUMN_FORMS}")
        cleanup[key] = value if key == "denoise" else True
    filters = FrameFilters(denoise=str(cleanup.get("denoise", "off")), deflicker=bool(cleanup.get("deflicker")))
    return Column(spec, model, filters, bool(cleanup.get("grain")))


class _Enough(Exception):
    """Every output the picture needs is made: stop the run."""


@dataclass(frozen=True)
class NeededCalls:
    """The model calls of a plan that make a range of outputs: skip the first ``skip`` calls, run
    from there; ``first_output`` is the first of them's first output, ``first_frame``..``last_frame``
    the input frames they read."""

    skip: int
    first_output: int
    first_frame: int
    last_frame: int


class _Picker:
    """The run's output callback: keeps the crop of each wanted output, stops the run after the last."""

    def __init__(self, wanted: range, first_output: int, crop: tuple[int, int, int, int]) -> None:
        self.wanted, self.index, self.crop = wanted, first_output, crop
        self.frames: dict[int, np.ndarray] = {}

    def __call__(self, frame: np.ndarray) -> None:
        oy, ox, h, w = self.crop
        if self.index in self.wanted:
            self.frames[self.index] = frame[oy : oy + h, ox : ox + w]
        self.index += 1
        if self.index >= self.wanted.stop:
            raise _Enough


def calls_for_outputs(plan: WindowPlan, wanted: range) -> NeededCalls:
    """Which of ``plan``'s calls make the outputs ``wanted`` (a pure function of the plan)."""
    output = 0
    skip = first_output = first_frame = last_frame = None
    for number, (window, steps) in enumerate(plan.calls()):
        end = output + len(steps)
        if skip is None and end > wanted.start:
            skip, first_output, first_frame = number, output, window.start
        if skip is not None:
            last_frame = max(last_frame or 0, window.last)
        if end >= wanted.stop:
            break
        output = end
    if skip is None:
        raise ValueError(f"the plan has no output {wanted.start}")
    return NeededCalls(skip, first_output, first_frame, last_frame)


def context_box(
    crop: tuple[int, int, int, int], scale: int, context: int, width: int, height: int
) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """The input box (x0, y0, x1, y1) an output ``crop`` (x, y, w, h) needs with ``context`` input
    pixels around it, clipped to the ``width`` x ``height`` frame; and the crop's (y, x) offset in
    the box's output."""
    x, y, w, h = crop
    x0, y0 = max(0, x // scale - context), max(0, y // scale - context)
    x1, y1 = min(width, -(-(x + w) // scale) + context), min(height, -(-(y + h) // scale) + context)
    return (x0, y0, x1, y1), (y - y0 * scale, x - x0 * scale)


def _decode(src: Path, info, first: int, stop: int, box: tuple[int, int, int, int]) -> list[np.ndarray]:
    """Input frames ``first``..``stop - 1``, cut to ``box``."""
    x0, y0, x1, y1 = box
    piece = probe(src, start=Fraction(first) / info.frame_rate, duration=Fraction(stop - first) / info.frame_rate)
    with VideoReader(piece) as reader:
        return [np.ascontiguousarray(frame[y0:y1, x0:x1]) for frame in reader.frames()]


def pick_output_frame(n_frames: int, fps_x: int, rate: Fraction, time: Fraction | None) -> int:
    """The in-between output frame nearest ``time`` (the middle of the clip by default)."""
    last_real = fps_x * (n_frames - 1)
    if last_real == 0 or fps_x == 1:
        return 0  # nothing is interpolated: show a real frame
    wanted = last_real / 2 if time is None else time * rate * fps_x
    j = min(max(round(wanted), 1), last_real - 1)
    if j % fps_x == 0:
        j += 1 if j + 1 < last_real else -1
    return j


def detailed_crop(luma: np.ndarray, size: tuple[int, int]) -> tuple[int, int]:
    """The top-left corner (x, y) of the ``size`` (w, h) box of ``luma`` ``[H, W]`` with the most
    detail: the highest mean squared luma gradient, each pixel's clipped at ``DETAIL_PERCENTILE`` of
    the frame's. Boxes start every 1/``CROP_STEPS`` of its size (and flush with the far edges); of
    equal ones the nearest the centre wins, so a flat frame gives the centre."""
    height, width = luma.shape
    w, h = min(size[0], width), min(size[1], height)
    gy, gx = np.gradient(luma.astype(np.float64))
    energy = gx**2 + gy**2
    # Clipped so that a few extreme pixels (dust, a scratch, a matte's edge, a subtitle) count no more
    # than ordinary texture: a box wins by detail throughout, where the models differ, not by a speck.
    limit = np.percentile(energy, DETAIL_PERCENTILE)
    energy = np.minimum(energy, limit if limit > 0 else energy.max())
    total = np.pad(energy.cumsum(axis=0).cumsum(axis=1), ((1, 0), (1, 0)))
    xs, ys = _starts(width - w, w)[None, :], _starts(height - h, h)[:, None]
    detail = total[ys + h, xs + w] - total[ys, xs + w] - total[ys + h, xs] + total[ys, xs]
    tied = detail >= detail.max() * (1 - 1e-9)
    distance = np.where(tied, (2 * xs - (width - w)) ** 2 + (2 * ys - (height - h)) ** 2, np.inf)
    row, column = np.unravel_index(np.argmin(distance), distance.shape)
    return int(xs[0, column]), int(ys[row, 0])


def _starts(last: int, size: int) -> np.ndarray:
    """Box starts 0..``last`` every 1/``CROP_STEPS`` of ``size``, the middle and ``last``."""
    return np.unique(np.append(np.arange(0, last + 1, max(1, size // CROP_STEPS)), [last // 2, last]))


def _detailed_output_crop(src: Path, info: VideoInfo, j: int, scale: int, fps_x: int) -> tuple[int, int, int, int]:
    """The default crop (x, y, w, h), ``CROP_SIZE`` output pixels on a side (less in a smaller frame):
    ``detailed_crop`` of the input frame nearest output frame ``j``, in output pixels."""
    w, h = min(CROP_SIZE, info.width * scale), min(CROP_SIZE, info.height * scale)
    nearest = min(round(Fraction(j, fps_x)), info.frame_count - 1)
    frame = _decode(src, info, nearest, nearest + 1, (0, 0, info.width, info.height))[0]
    x, y = detailed_crop(luma(frame), (-(-w // scale), -(-h // scale)))  # the input box holds the output one
    return x * scale, y * scale, w, h


def compare(
    input: Path | str,
    output: Path | str,
    *,
    models: Sequence[str] = (),
    time: Fraction | float | None = None,
    crop: tuple[int, int, int, int] | None = None,
    profile: bool = False,
    scale: int = 4,
    fps_x: int = 2,
    device: str = "auto",
    offline: bool | None = None,
    registry: Registry | None = None,
    max_memory: int | str | None = None,
) -> CompareResult:
    """One PNG: the crop ``(x, y, w, h)`` (output pixels; by default ``detailed_crop``'s) of the
    in-between frame nearest ``time`` from ``classic`` and each of ``models`` (columns as
    ``parse_column`` reads them), with ``profile`` strips. Each model runs only on the crop with its
    context around it, and only on the windows an upscale run would use there."""
    src, dst = Path(input), Path(output)
    if dst.suffix.lower() != ".png":
        raise UsageError(f"output '{dst}' must be a .png file")
    if dst.exists() and dst.resolve() == src.resolve():
        raise UsageError(f"output '{dst}' is the input file")
    registry = registry or load_registry()
    columns = [parse_column(name) for name in [BASELINE, *(m for m in models or [registry.default] if m != BASELINE)]]
    specs = [registry.get(column.model) for column in columns]
    for spec in specs:
        spec.check_factors(scale=scale, fps_x=fps_x)

    info = probe(src)
    j = pick_output_frame(info.frame_count, fps_x, info.frame_rate, None if time is None else Fraction(time))
    out_w, out_h = info.width * scale, info.height * scale
    x, y, w, h = crop or _detailed_output_crop(src, info, j, scale, fps_x)
    if not (0 <= x < out_w and 0 <= y < out_h and w > 0 and h > 0):
        raise UsageError(f"--crop {x},{y},{w},{h} is outside the {out_w}x{out_h} output")
    w, h = min(w, out_w - x), min(h, out_h - y)

    # Outputs to show: the chosen frame, and for the profile the real outputs within PROFILE_RADIUS inputs of it.
    last_real = fps_x * (info.frame_count - 1)
    reach = fps_x * PROFILE_RADIUS if profile else 0
    wanted = range(max(0, j - reach), min(last_real, j + reach) + 1)

    whole = scan(info, threshold=None)  # a black-and-white film stays black-and-white, as in upscale
    grey = grey_windows(whole.grey_shots, whole.cuts)
    crops, profiles = [], []
    for column, spec in zip(columns, specs):
        model = load_model(spec, scale=scale, device=device, offline=offline)
        window, overlap = spec.window_and_overlap(None, None)
        plan = plan_windows(info.frame_count, window, overlap, fps_x, spec.min_frames)
        # The model sees only the windows an upscale run would use for these outputs, and only the
        # crop with the context its output pixels depend on: seconds, not a whole-frame run.
        calls = calls_for_outputs(plan, wanted)
        box, (oy, ox) = context_box((x, y, w, h), scale, spec.context, info.width, info.height)
        frames = _decode(src, info, calls.first_frame, calls.last_frame + 1, box)
        grain = None
        if column.grain:  # measured as upscale measures it: on whole frames, before the clean-up
            whole_frames = _decode(src, info, calls.first_frame, calls.last_frame + 1, (0, 0, info.width, info.height))
            grain = measure_shots(whole_frames, len(whole_frames), [])[0]
        if column.filters:
            # On the crop with its context, not the whole frame: the denoiser works on small blocks
            # (and each frame's two neighbours), but deflicker evens out the box's mean, not the frame's.
            # filter_arrays is 8-bit: a deeper source is cleaned, and modelled, in 8 bits here.
            frames = filter_arrays([to_uint8(frame) for frame in frames], column.filters, info.frame_rate)
        runner, _ = budgeted_runner(
            model, window=window, fps_x=fps_x, height=box[3] - box[1], width=box[2] - box[0],
            max_memory=None if max_memory is None else parse_size(max_memory),
        )  # fmt: skip
        picked = _Picker(wanted, calls.first_output, (oy, ox, h, w))
        try:
            run_windows(frames, plan, runner, picked, skip_windows=calls.skip, first_frame=calls.first_frame, grey=grey)
        except _Enough:
            pass
        shown = {i: to_uint8(frame) for i, frame in picked.frames.items()}
        if grain is not None:
            # Each from its output frame's number, as upscale draws it, but over the crop: grain of the
            # same size and strength, not the very grains the whole frame gets at these pixels.
            shown = {i: add_grain(frame, grain, scale, i) for i, frame in shown.items()}
        crops.append(shown[j])
        profiles.append(np.stack([shown[i][h // 2] for i in wanted]))
        del model

    names = [column.spec for column in columns]
    image = _compose(names, crops, profiles if profile else None)
    tmp = dst.with_name(f".{dst.stem}.partial.png")
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return CompareResult(
        dst, image.width, image.height, names, j, Fraction(j) / (info.frame_rate * fps_x), (x, y, w, h)
    )


def _compose(names: list[str], crops: list[np.ndarray], profiles: list[np.ndarray] | None):
    """Label over each crop, crops side by side, profile strips underneath."""
    from PIL import Image, ImageDraw, ImageFont

    h, w = crops[0].shape[:2]
    strip = 0 if profiles is None else profiles[0].shape[0] * PROFILE_ROW_HEIGHT
    width = len(crops) * w + (len(crops) - 1) * GAP
    height = LABEL_HEIGHT + h + (GAP + strip if strip else 0)
    canvas = Image.new("RGB", (width, height), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=14)
    for i, (name, crop) in enumerate(zip(names, crops)):
        left = i * (w + GAP)
        label = "bicubic + blend" if name == BASELINE else name
        draw.text((left + 4, 3), label, fill=(235, 235, 235), font=font)
        canvas.paste(Image.fromarray(np.ascontiguousarray(crop)), (left, LABEL_HEIGHT))
        if profiles is not None:
            tall = np.repeat(profiles[i], PROFILE_ROW_HEIGHT, axis=0)
            canvas.paste(Image.fromarray(np.ascontiguousarray(tall)), (left, LABEL_HEIGHT + h + GAP))
    return canvas
