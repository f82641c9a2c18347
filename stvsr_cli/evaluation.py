"""``stvsr eval``: score a model on ground-truth clips with the papers' protocol.

The protocol of the papers (and of the project's evaluation set), exactly:
1. crop each ground-truth frame down to multiples of the scale;
2. the input is ground-truth frames 0, k, 2k, ... (k = fps_x), downscaled by antialiased bicubic on
   float RGB in [0, 1] and rounded to 8 bits;
3. the input runs through the same windowed pipeline as ``stvsr upscale``; output frames
   0 .. k(n_in - 1) are rounded to 8 bits and scored against the ground truth;
4. PSNR and SSIM on BT.601 Y, no border crop; the mean over a clip's frames, then over clips.
   Input-position frames (j % k == 0) and interpolated frames are also reported apart.

``degradation="blur"`` (DAVSR's setting, motion blur from a long exposure) replaces the sampling
of step 2: input frame i is the mean of the ``blur_window(k)`` ground-truth frames centred on frame
k*i, then downscaled the same way (``temporal_blur``, ``degrade_tensor``; training uses it too).
``degradation="film"`` keeps the frames of step 2 but makes them look like an old film transfer
(blur, random downscaling kernel, flicker, grain, dust, scratches, grey, a real H.264 or MPEG-2
encode: ``film.py``), drawn from a seed: ``evaluate`` seeds clip ``name`` with (seed, crc32(name)),
so the input, and the scores, repeat across runs and do not depend on the other clips.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from stvsr_cli.errors import InputError, UsageError
from stvsr_cli.film import film_degrade
from stvsr_cli.io.colour import to_uint8
from stvsr_cli.io.decode import VideoReader, probe
from stvsr_cli.io.filters import FrameFilters, filter_arrays
from stvsr_cli.metrics import psnr_y, ssim_y
from stvsr_cli.models.loader import Upscaler
from stvsr_cli.pipeline.memory import budgeted_runner
from stvsr_cli.pipeline.run import run_windows
from stvsr_cli.pipeline.windows import plan_windows

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".y4m", ".flv", ".wmv"}


@dataclass(frozen=True)
class Clip:
    name: str
    path: Path  # a video file, or a folder of frames


def find_clips(paths: Sequence[Path | str]) -> list[Clip]:
    """Clips named on the command line: video files, folders of videos, folders of frame folders,
    or a folder of frames itself."""
    clips: list[Clip] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise InputError(f"'{path}' not found")
        if path.is_file():
            clips.append(Clip(path.stem, path))
            continue
        entries = sorted(path.iterdir())
        if any(e.suffix.lower() in IMAGE_SUFFIXES for e in entries if e.is_file()):
            clips.append(Clip(path.name, path))
            continue
        found = [Clip(e.name, e) for e in entries if e.is_dir() and _has_images(e)]
        found += [Clip(e.stem, e) for e in entries if e.is_file() and e.suffix.lower() in VIDEO_SUFFIXES]
        if not found:
            raise InputError(f"'{path}' holds no videos and no folders of frames")
        clips.extend(found)
    return clips


def _has_images(folder: Path) -> bool:
    return any(e.suffix.lower() in IMAGE_SUFFIXES for e in folder.iterdir() if e.is_file())


def read_clip(clip: Clip) -> list[np.ndarray]:
    """The clip's frames as ``[H, W, 3]`` uint8 RGB arrays."""
    if clip.path.is_dir():
        frames = []
        for file in sorted(p for p in clip.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            try:
                with av.open(str(file)) as container:
                    frames.append(next(container.decode(video=0)).to_ndarray(format="rgb24"))
            except (av.FFmpegError, StopIteration):
                raise InputError(f"cannot read frame '{file}'") from None
        return frames
    with VideoReader(probe(clip.path)) as reader:
        return [to_uint8(f) for f in reader.frames()]


def downscale_tensor(frames: torch.Tensor, scale: int) -> torch.Tensor:
    """The protocol's input: ``[..., 3, H, W]`` float RGB in [0, 1], antialiased bicubic 1/scale,
    rounded to 8-bit levels (still float in [0, 1])."""
    shape = frames.shape
    small = F.interpolate(
        frames.reshape(-1, *shape[-3:]), scale_factor=1 / scale, mode="bicubic", antialias=True, align_corners=False
    )
    small = (small * 255).round().clamp(0, 255) / 255
    return small.view(*shape[:-2], *small.shape[-2:])


DEGRADATIONS = ("standard", "blur", "film")


def check_degradation(degradation: str) -> None:
    """Refuse a degradation name that is not one of ``DEGRADATIONS``, naming those that are."""
    if degradation not in DEGRADATIONS:
        raise UsageError(f"unknown degradation '{degradation}'", "known: " + ", ".join(DEGRADATIONS))


def blur_window(fps_x: int) -> int:
    """How many ground-truth frames the blur degradation averages into one input frame at x``fps_x``.

    DAVSR's degradation (its Eq. 1, REDS "blur": 5 frames per LR frame at 5x the rate) is a box over
    the whole input frame interval; centred on frame k*i, so that input i stays at output k*i, it
    needs an odd count: k for odd k, k+1 for even k (3 at x2: frames 2i-1, 2i, 2i+1)."""
    return 2 * (fps_x // 2) + 1


def blur_indices(length: int, fps_x: int) -> torch.Tensor:
    """``[(length-1)//fps_x + 1, blur_window(fps_x)]``: the frames averaged into each input frame of
    the blur degradation, centred on frame ``fps_x * i``. Past the clip's ends the clip is reflected
    about its end frames (frame -1 is frame 1, frame L is frame L-2); a one-frame clip is its own blur."""
    radius = fps_x // 2
    index = torch.arange(0, length, fps_x)[:, None] + torch.arange(-radius, radius + 1)[None]
    if length == 1:
        return torch.zeros_like(index)
    period = 2 * (length - 1)
    index = index % period
    return torch.where(index >= length, period - index, index)


def temporal_blur(frames: torch.Tensor, fps_x: int) -> torch.Tensor:
    """``[..., L, C, H, W]`` -> ``[..., (L-1)//fps_x + 1, C, H, W]``: each output the mean of the
    frames ``blur_indices`` names."""
    index = blur_indices(frames.shape[-4], fps_x)
    picked = frames.index_select(-4, index.flatten().to(frames.device))
    return picked.view(*frames.shape[:-4], *index.shape, *frames.shape[-3:]).mean(-4)


def degrade_tensor(
    frames: torch.Tensor, fps_x: int, scale: int, degradation: str = "standard", seed: int | Sequence[int] = 0
) -> torch.Tensor:
    """The input made from ground truth ``[..., L, 3, H, W]`` (float RGB in [0, 1]): frames 0, k, 2k,
    ... (``standard``) or their ``temporal_blur`` (``blur``), then ``downscale_tensor``; or
    ``film.film_degrade`` of them, seeded by ``seed`` (the others ignore it)."""
    if degradation == "standard":
        return downscale_tensor(frames[..., ::fps_x, :, :, :], scale)
    check_degradation(degradation)
    if degradation == "film":
        return film_degrade(frames, fps_x, scale, seed)
    return downscale_tensor(temporal_blur(frames, fps_x), scale)


def degrade(
    frames: list[np.ndarray], fps_x: int, scale: int, degradation: str = "standard", seed: int | Sequence[int] = 0
) -> list[np.ndarray]:
    """``degrade_tensor`` on uint8 ``[H, W, 3]`` frames, computed in float64, one input frame at a
    time (a whole clip in float64 would not fit); ``film`` in float32, a few frames at a time."""
    if degradation == "standard":  # only the kept frames need converting
        return downscale(frames[::fps_x], scale)
    check_degradation(degradation)
    if degradation == "film":
        kept = torch.from_numpy(np.stack(frames[::fps_x])).permute(0, 3, 1, 2)
        small = (film_degrade(kept[None], 1, scale, seed)[0] * 255).round().to(torch.uint8)
        return list(small.permute(0, 2, 3, 1).contiguous().numpy())
    out = []
    for row in blur_indices(len(frames), fps_x).tolist():
        window = torch.from_numpy(np.stack([frames[j] for j in row])).permute(0, 3, 1, 2).double() / 255
        small = (downscale_tensor(window.mean(0), scale) * 255).round().to(torch.uint8)
        out.append(small.permute(1, 2, 0).contiguous().numpy())
    return out


def downscale(frames: list[np.ndarray], scale: int) -> list[np.ndarray]:
    """``downscale_tensor`` on uint8 ``[H, W, 3]`` frames, computed in float64."""
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).double() / 255
    small = (downscale_tensor(x, scale) * 255).round().to(torch.uint8)
    return list(small.permute(0, 2, 3, 1).contiguous().numpy())


@dataclass(frozen=True)
class ClipScore:
    name: str
    frames: int
    psnr_y: float
    ssim_y: float
    input_psnr_y: float
    input_ssim_y: float
    interp_psnr_y: float | None  # None when nothing was interpolated (fps_x 1, one input frame)
    interp_ssim_y: float | None
    seconds: float


@dataclass(frozen=True)
class EvalResult:
    model: str
    scale: int
    fps_x: int
    clips: list[ClipScore]
    degradation: str = "standard"
    degradation_seed: int | None = None  # what seeded the film degradation; None for the others
    cleanup: list[str] = field(default_factory=list)  # the filters run on the input first

    @property
    def mean(self) -> dict[str, float]:
        return {
            "psnr_y": _mean(c.psnr_y for c in self.clips),
            "ssim_y": _mean(c.ssim_y for c in self.clips),
        }

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "scale": self.scale,
            "fps_x": self.fps_x,
            "degradation": self.degradation,
            **({} if self.degradation_seed is None else {"degradation_seed": self.degradation_seed}),
            **({"cleanup": self.cleanup} if self.cleanup else {}),
            "clips": [{k: _finite(v) for k, v in asdict(c).items()} for c in self.clips],
            "mean": {k: _finite(v) for k, v in self.mean.items()},
        }


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def _finite(value):
    """JSON has no infinity: identical frames give PSNR "inf" as a string."""
    return "inf" if isinstance(value, float) and math.isinf(value) else value


def score_clip(
    name: str,
    ground_truth: list[np.ndarray],
    model: Upscaler,
    *,
    scale: int,
    fps_x: int,
    window: int,
    overlap: int,
    degradation: str = "standard",
    seed: int = 0,
    max_memory: int | None = None,
    cleanup: FrameFilters | None = None,
) -> ClipScore:
    """Run the protocol on one clip of ground-truth frames (``seed``: see ``film_seed``); the model
    is tiled to fit ``max_memory`` (see ``budgeted_runner``); ``cleanup`` (denoise, deflicker)
    filters the input first."""
    began = time.perf_counter()
    h, w = ground_truth[0].shape[:2]
    h, w = h - h % scale, w - w % scale
    if h == 0 or w == 0:
        raise InputError(f"clip '{name}' is smaller than the scale")
    truth = [f[:h, :w] for f in ground_truth]
    n_in = (len(truth) - 1) // fps_x + 1
    scored = fps_x * (n_in - 1) + 1  # the held frames after the last input are not scored
    # Blur averages within the scored frames only, as training does: the ends are mirrored.
    inputs = degrade(truth[:scored], fps_x, scale, degradation, film_seed(seed, name))
    if cleanup:
        inputs = filter_arrays(inputs, cleanup)
    outputs: list[np.ndarray] = []

    def keep(frame: np.ndarray) -> None:
        if len(outputs) < scored:
            outputs.append(frame)

    runner, _ = budgeted_runner(
        model, window=window, fps_x=fps_x, height=h // scale, width=w // scale, max_memory=max_memory
    )
    run_windows(inputs, plan_windows(n_in, window, overlap, fps_x, model.spec.min_frames), runner, keep)
    psnrs, ssims = [], []
    for out, gt in zip(outputs, truth):
        a = torch.from_numpy(out).permute(2, 0, 1)
        b = torch.from_numpy(gt).permute(2, 0, 1)
        psnrs.append(psnr_y(a, b))
        ssims.append(ssim_y(a, b))
    real = [j for j in range(scored) if j % fps_x == 0]
    between = [j for j in range(scored) if j % fps_x]
    return ClipScore(
        name=name,
        frames=scored,
        psnr_y=_mean(psnrs),
        ssim_y=_mean(ssims),
        input_psnr_y=_mean(psnrs[j] for j in real),
        input_ssim_y=_mean(ssims[j] for j in real),
        interp_psnr_y=_mean(psnrs[j] for j in between) if between else None,
        interp_ssim_y=_mean(ssims[j] for j in between) if between else None,
        seconds=time.perf_counter() - began,
    )


def film_seed(seed: int, name: str) -> tuple[int, int]:
    """Clip ``name``'s film seed: the same for the same clip whatever else is scored with it."""
    return seed, zlib.crc32(name.encode())


def evaluate(
    data: Sequence[Path | str],
    model: Upscaler,
    *,
    fps_x: int = 2,
    window: int | None = None,
    overlap: int | None = None,
    on_clip: Callable[[ClipScore], None] | None = None,
    degradation: str = "standard",
    degradation_seed: int = 0,
    max_memory: int | None = None,
    cleanup: FrameFilters | None = None,
) -> EvalResult:
    """Score ``model`` on every clip found in ``data`` (see ``find_clips``); ``degradation`` makes
    the input (``DEGRADATIONS``), ``film`` from ``degradation_seed`` (fixed, so runs compare);
    ``cleanup`` filters it as upscale's ``--denoise``/``--deflicker`` do."""
    spec = model.spec
    spec.check_factors(fps_x=fps_x)
    check_degradation(degradation)
    window, overlap = spec.window_and_overlap(window, overlap)
    scores = []
    for clip in find_clips(data):
        frames = read_clip(clip)
        if not frames:
            raise InputError(f"clip '{clip.name}' has no frames")
        score = score_clip(
            clip.name, frames, model, scale=model.scale, fps_x=fps_x, window=window, overlap=overlap,
            degradation=degradation, seed=degradation_seed, max_memory=max_memory, cleanup=cleanup,
        )  # fmt: skip
        scores.append(score)
        if on_clip is not None:
            on_clip(score)
    seed = degradation_seed if degradation == "film" else None
    return EvalResult(
        model=spec.name, scale=model.scale, fps_x=fps_x, clips=scores, degradation=degradation, degradation_seed=seed,
        cleanup=cleanup.described() if cleanup else [],
    )  # fmt: skip
