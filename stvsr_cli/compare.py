"""``stvsr compare``: look before reading numbers. One PNG: the same crop of an in-between frame
from bicubic (``classic``) and each model, side by side and labelled; optionally a temporal
profile under each (one pixel row stacked over time, as in the TPSR paper), where flicker,
ghosting and window seams show at a glance."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from stvsr_cli.errors import UsageError
from stvsr_cli.io.colour import to_uint8
from stvsr_cli.io.decode import VideoReader, probe
from stvsr_cli.models.loader import load_model
from stvsr_cli.models.registry import Registry, load_registry
from stvsr_cli.pipeline.run import run_windows
from stvsr_cli.pipeline.windows import plan_windows

BASELINE = "classic"
PROFILE_RADIUS = 16  # input frames on each side of the chosen time in the temporal profile
PROFILE_ROW_HEIGHT = 3  # pixels per output frame in the profile strip
LABEL_HEIGHT = 22
GAP = 8


@dataclass(frozen=True)
class CompareResult:
    path: Path
    width: int
    height: int
    models: list[str]
    frame: int  # output frame index shown
    time: Fraction  # its time in seconds from the first frame
    crop: tuple[int, int, int, int]  # x, y, w, h in output pixels


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


def default_crop(width: int, height: int, size: int = 256) -> tuple[int, int, int, int]:
    w, h = min(size, width), min(size, height)
    return (width - w) // 2, (height - h) // 2, w, h


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
) -> CompareResult:
    src, dst = Path(input), Path(output)
    if dst.suffix.lower() != ".png":
        raise UsageError(f"output '{dst}' must be a .png file")
    if dst.exists() and dst.resolve() == src.resolve():
        raise UsageError(f"output '{dst}' is the input file")
    registry = registry or load_registry()
    names = [BASELINE] + [m for m in (models or [registry.default]) if m != BASELINE]
    specs = [registry.get(name) for name in names]
    for spec in specs:
        spec.check_factors(scale=scale, fps_x=fps_x)

    info = probe(src)
    j = pick_output_frame(info.frame_count, fps_x, info.frame_rate, None if time is None else Fraction(time))
    out_w, out_h = info.width * scale, info.height * scale
    x, y, w, h = crop or default_crop(out_w, out_h)
    if not (0 <= x < out_w and 0 <= y < out_h and w > 0 and h > 0):
        raise UsageError(f"--crop {x},{y},{w},{h} is outside the {out_w}x{out_h} output")
    w, h = min(w, out_w - x), min(h, out_h - y)

    # Decode only the piece around the chosen frame that the models (and the profile) need.
    centre = j // fps_x
    radius = max([s.window for s in specs] + ([PROFILE_RADIUS] if profile else []))
    first, stop = max(0, centre - radius), min(info.frame_count, centre + radius + 2)
    piece = probe(src, start=Fraction(first) / info.frame_rate, duration=Fraction(stop - first) / info.frame_rate)
    with VideoReader(piece) as reader:
        frames = list(reader.frames())
    local = j - fps_x * first
    real_outputs = fps_x * (len(frames) - 1) + 1

    crops, profiles = [], []
    row = y + h // 2  # the profile's row
    for spec in specs:
        model = load_model(spec, scale=scale, device=device, offline=offline)
        window, overlap = spec.window_and_overlap(None, None)
        plan = plan_windows(len(frames), window, overlap, fps_x, spec.min_frames)
        rows: list[np.ndarray] = []
        shown: list[np.ndarray] = []

        def keep(frame: np.ndarray, rows=rows, shown=shown) -> None:
            index = len(rows)
            if index < real_outputs:
                rows.append(frame[row, x : x + w])
            if index == local:
                shown.append(frame[y : y + h, x : x + w])

        run_windows(frames, plan, model, keep)
        crops.append(to_uint8(shown[0]))
        profiles.append(to_uint8(np.stack(rows)))

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
