"""Spatial tiling, for frames too big for the device: overlapping tiles blended with linear ramps.

``plan_tiles`` is a pure function of integers. ``TiledModel`` wraps any window model: it runs each
tile of a window and blends the overlaps so that no seam shows: inside an overlap each tile's
weight ramps linearly down towards its own edge, where its output is least reliable. Tile sizes
follow the model's own size rule (``size_multiple``), so that its padding adds nothing to a tile.
"""

from __future__ import annotations

import ctypes
import gc
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stvsr_cli.errors import DeviceError
from stvsr_cli.pipeline.run import WindowModel

if TYPE_CHECKING:
    import torch

TILE_OVERLAP = 16  # LR pixels shared by neighbouring tiles
MIN_TILE = 2 * TILE_OVERLAP


@dataclass(frozen=True)
class Tile:
    """A box of LR pixels: rows ``y0:y1``, columns ``x0:x1``."""

    y0: int
    y1: int
    x0: int
    x1: int


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Spans of ``tile`` pixels every ``tile - overlap``, the last flush with the end; one span if it fits."""
    if length <= tile:
        return [(0, length)]
    spans = []
    start = 0
    while start + tile < length:
        spans.append((start, start + tile))
        start += tile - overlap
    spans.append((length - tile, length))
    return spans


def plan_tiles(height: int, width: int, tile: int, overlap: int = TILE_OVERLAP, multiple: int = 1) -> list[Tile]:
    """Tiles of at most ``tile`` pixels a side (rounded down to ``multiple``) covering the frame."""
    size = tile - tile % multiple
    if size < 2 * overlap:
        raise ValueError(f"tiles must be at least {2 * overlap} pixels for an overlap of {overlap}")
    return [
        Tile(y0, y1, x0, x1)
        for y0, y1 in tile_spans(height, size, overlap)
        for x0, x1 in tile_spans(width, size, overlap)
    ]


def ramp(start: int, stop: int, length: int, width: int, device: torch.device) -> torch.Tensor:
    """Blend weights along one axis of a tile spanning ``start:stop`` of ``length`` (all in output
    pixels): rising over ``width`` pixels at each edge shared with a neighbour, 1 elsewhere."""
    import torch

    n = stop - start
    weights = torch.ones(n, device=device)
    rise = (torch.arange(min(width, n), device=device, dtype=torch.float32) + 0.5) / width
    if start > 0:
        weights[: rise.numel()] = torch.minimum(weights[: rise.numel()], rise)
    if stop < length:
        weights[n - rise.numel() :] = torch.minimum(weights[n - rise.numel() :], rise.flip(0))
    return weights


class TiledModel:
    """A window model that runs ``model`` tile by tile and blends the tiles. ``overlap`` (LR pixels)
    is the model's context, at most half a tile."""

    def __init__(self, model: WindowModel, tile: int, scale: int, overlap: int = TILE_OVERLAP) -> None:
        overlap = min(overlap, tile // 2)
        plan_tiles(tile, tile, tile, overlap, model.size_multiple)  # refuse a tile too small for the overlap now
        self.model = model
        self.tile = tile
        self.scale = scale
        self.overlap = overlap
        self.device = model.device
        self.arbitrary_times = model.arbitrary_times
        self.size_multiple = model.size_multiple

    def __call__(self, frames: torch.Tensor, fps_x: int, times: list | None = None) -> torch.Tensor:
        _, _, height, width = frames.shape
        tiles = plan_tiles(height, width, self.tile, self.overlap, self.size_multiple)
        extra = {} if times is None else {"times": times}
        if len(tiles) == 1:
            return self.model(frames, fps_x, **extra)
        s = self.scale
        out = weight_sum = None
        for t in tiles:
            part = self.model(frames[:, :, t.y0 : t.y1, t.x0 : t.x1], fps_x, **extra).float()
            wy = ramp(t.y0 * s, t.y1 * s, height * s, self.overlap * s, part.device)
            wx = ramp(t.x0 * s, t.x1 * s, width * s, self.overlap * s, part.device)
            weight = wy[:, None] * wx[None, :]
            if out is None:
                out = part.new_zeros(part.shape[0], part.shape[1], height * s, width * s)
                weight_sum = part.new_zeros(height * s, width * s)
            out[:, :, t.y0 * s : t.y1 * s, t.x0 * s : t.x1 * s] += part * weight
            weight_sum[t.y0 * s : t.y1 * s, t.x0 * s : t.x1 * s] += weight
        return out / weight_sum


def is_out_of_memory(exc: BaseException) -> bool:
    """A device (or host) allocation failure that smaller tiles can avoid."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


class OutOfMemoryFallback:
    """Run ``model`` (tiled at ``tile`` LR pixels, or whole when 0); when a window runs out of
    memory, free what the failed call held, halve the tile (or start tiling at half the frame) and
    retry the window. Gives up, re-raising, only when even ``MIN_TILE`` pixels do not fit.
    ``tile`` is then the size that works; ``notes`` says what happened."""

    def __init__(self, model: WindowModel, scale: int, tile: int = 0, overlap: int = TILE_OVERLAP) -> None:
        self.model = model
        self.scale = scale
        self.tile = tile
        self.overlap = overlap
        self.device = model.device
        self.notes: list[str] = []
        self.arbitrary_times = model.arbitrary_times
        self.size_multiple = model.size_multiple
        self._current: WindowModel = TiledModel(model, tile, scale, overlap) if tile else model
        self._unbatched = False  # a batch of windows ran out of memory: no more batches

    def __call__(self, frames: torch.Tensor, fps_x: int, times: list | None = None) -> torch.Tensor:
        extra = {} if times is None else {"times": times}
        while True:
            try:
                return self._current(frames, fps_x, **extra)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                smaller = self._smaller(max(frames.shape[-2:]))
                if smaller is None:
                    raise DeviceError(
                        f"out of memory on {self.device} even with tiles of {self.tile or max(frames.shape[-2:])} px",
                        "try a smaller --window or another --device",
                    ) from exc
                del exc  # its traceback holds the failed call's tensors
                release_freed_memory(self.device)
                self.notes.append(
                    f"out of memory on {self.device}: tiling at {smaller} px"
                    + (f" (was {self.tile} px)" if self.tile else "")
                )
                self.tile = smaller
                self._current = TiledModel(self.model, smaller, self.scale, self.overlap)

    def batch(self, windows: torch.Tensor, fps_x: int, times: list | None = None) -> torch.Tensor:
        """Several windows in one call (``[B, N, 3, H, W]``) where the model takes batches and runs
        untiled; otherwise, or once a batch has run out of memory, one window at a time."""
        extra = {} if times is None else {"times": times}
        if self.tile == 0 and not self._unbatched and hasattr(self.model, "batch"):
            try:
                return self.model.batch(windows, fps_x, **extra)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                del exc
                release_freed_memory(self.device)
                self.unbatch(f"out of memory on {self.device} with {len(windows)} windows a call: one at a time")
        import torch

        return torch.stack([self(window, fps_x, **extra) for window in windows])

    def unbatch(self, note: str) -> None:
        """One window a call from now on, and why."""
        self._unbatched = True
        self.notes.append(note)

    def _smaller(self, frame_size: int) -> int | None:
        current = self.tile or frame_size
        smaller = max(MIN_TILE, (current // 2) // self.size_multiple * self.size_multiple)
        return smaller if smaller < current and current > MIN_TILE else None


def release_freed_memory(device: torch.device) -> None:
    """Give freed memory back (the allocator's caches): after a call ran out of memory, and before a
    peak is measured (``memory.PeakMeter``), so that what is measured next is new use."""
    gc.collect()
    if device.type == "cuda":
        import torch

        torch.cuda.empty_cache()
    else:
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
