"""Spatial tiling, for frames too big for the device: overlapping tiles, each output pixel taken
only from tiles in which it saw all the input it depends on.

A model's ``context`` (LR pixels, measured per model: see weights/registry.toml) is how far an output
pixel's value reaches into the input. Inside a tile, pixels within ``context`` of an edge shared with
a neighbour saw the tile's edge instead of the frame, so they get no weight; neighbouring tiles
overlap by twice the context plus a band where their weights cross linearly, and every kept pixel is
then what the whole frame gives (to the model's measured precision). ``plan_tiles`` is a pure
function of integers. Tile sizes and offsets follow the model's size rule (``size_multiple``): its
strided layers then see the same pixel grid as on the whole frame, which is padded to that multiple
first, as the model itself would pad it.
"""

from __future__ import annotations

import ctypes
import gc
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stvsr_cli.errors import DeviceError, UsageError
from stvsr_cli.pipeline.run import WindowModel

if TYPE_CHECKING:
    import torch

BLEND = 8  # LR pixels over which neighbouring tiles' weights cross, between their context bands
MIN_TILE = 32  # the smallest tile side that can be asked for at all (a model's own minimum is larger)


def tile_overlap(context: int, multiple: int = 1) -> int:
    """LR pixels shared by neighbouring tiles: the context band of each, and the blend between,
    rounded up to the size rule so that every tile starts on the model's pixel grid."""
    overlap = 2 * context + BLEND
    return -(-overlap // multiple) * multiple


def min_tile(context: int, multiple: int = 1) -> int:
    """The smallest tile for a model of this context: twice the overlap, so that at least half of
    every tile is kept."""
    return max(MIN_TILE, 2 * tile_overlap(context, multiple))


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


def plan_tiles(height: int, width: int, tile: int, overlap: int, multiple: int = 1) -> list[Tile]:
    """Tiles of at most ``tile`` pixels a side (rounded down to ``multiple``) covering the frame,
    neighbours sharing at least ``overlap`` pixels."""
    size = tile - tile % multiple
    if size < 2 * overlap:
        raise ValueError(f"tiles must be at least {2 * overlap} pixels for an overlap of {overlap}")
    return [
        Tile(y0, y1, x0, x1)
        for y0, y1 in tile_spans(height, size, overlap)
        for x0, x1 in tile_spans(width, size, overlap)
    ]


def tile_weights(start: int, stop: int, length: int, band: int, blend: int, device: torch.device) -> torch.Tensor:
    """Weights along one axis of a tile spanning ``start:stop`` of ``length`` (all in output pixels):
    at each edge shared with a neighbour, 0 over the ``band`` the tile's context does not cover,
    then rising linearly over ``blend`` pixels to 1; 1 at the frame's own edges."""
    import torch

    n = stop - start
    rise = torch.cat([torch.zeros(band), (torch.arange(blend, dtype=torch.float32) + 0.5) / blend])[:n]
    weights = torch.ones(n)
    if start > 0:
        weights[: rise.numel()] = torch.minimum(weights[: rise.numel()], rise)
    if stop < length:
        weights[n - rise.numel() :] = torch.minimum(weights[n - rise.numel() :], rise.flip(0))
    return weights.to(device)


class TiledModel:
    """A window model that runs ``model`` tile by tile on frames padded to its size rule, and keeps
    of each tile the pixels that saw their whole ``context`` (LR pixels) there."""

    def __init__(self, model: WindowModel, tile: int, scale: int, context: int) -> None:
        multiple = model.size_multiple
        if tile < min_tile(context, multiple):
            raise UsageError(
                f"tiles of {tile} px are too small for a model whose output reaches {context} px into its input",
                f"use tiles of at least {min_tile(context, multiple)} px",
            )
        self.model = model
        self.tile = tile
        self.scale = scale
        self.context = context
        self.overlap = tile_overlap(context, multiple)
        self.device = model.device
        self.arbitrary_times = model.arbitrary_times
        self.shot_edges = model.shot_edges
        self.size_multiple = multiple

    def __call__(self, frames: torch.Tensor, fps_x: int, **facts) -> torch.Tensor:
        import torch.nn.functional as F

        _, _, h, w = frames.shape
        m, s = self.size_multiple, self.scale
        height, width = h + -h % m, w + -w % m
        tiles = plan_tiles(height, width, self.tile, self.overlap, m)
        if len(tiles) == 1:
            return self.model(frames, fps_x, **facts)
        if (height, width) != (h, w):  # as the model pads a whole frame: tiles at its edges see the same
            frames = F.pad(frames, (0, width - w, 0, height - h), mode=getattr(self.model, "pad_mode", "replicate"))
        band, blend = self.context * s, (self.overlap - 2 * self.context) * s
        out = weight_sum = None
        for t in tiles:
            part = self.model(frames[:, :, t.y0 : t.y1, t.x0 : t.x1], fps_x, **facts).float()
            wy = tile_weights(t.y0 * s, t.y1 * s, height * s, band, blend, part.device)
            wx = tile_weights(t.x0 * s, t.x1 * s, width * s, band, blend, part.device)
            weight = wy[:, None] * wx[None, :]
            if out is None:
                out = part.new_zeros(part.shape[0], part.shape[1], height * s, width * s)
                weight_sum = part.new_zeros(height * s, width * s)
            out[:, :, t.y0 * s : t.y1 * s, t.x0 * s : t.x1 * s] += part * weight
            weight_sum[t.y0 * s : t.y1 * s, t.x0 * s : t.x1 * s] += weight
        return (out / weight_sum)[..., : h * s, : w * s]


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
    retry the window. Gives up, re-raising, only when even the model's smallest tile does not fit.
    ``tile`` is then the size that works; ``notes`` says what happened. ``context``: the model's
    (tiles overlap by twice that); ``exact_tiles``: whether tiles can give what the whole frame does
    (not where a layer pools over the whole frame: then tiling is said once in ``notes``)."""

    def __init__(
        self, model: WindowModel, scale: int, tile: int = 0, context: int = 16, exact_tiles: bool = True
    ) -> None:
        self.model = model
        self.scale = scale
        self.tile = tile
        self.context = context
        self.exact_tiles = exact_tiles
        self.device = model.device
        self.notes: list[str] = []
        self.arbitrary_times = model.arbitrary_times
        self.shot_edges = model.shot_edges
        self.size_multiple = model.size_multiple
        self._said_inexact = False
        self._current: WindowModel = self._tiled(tile) if tile else model
        self._unbatched = False  # a batch of windows ran out of memory: no more batches

    def __call__(self, frames: torch.Tensor, fps_x: int, **facts) -> torch.Tensor:
        while True:
            try:
                return self._current(frames, fps_x, **facts)
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
                self._current = self._tiled(smaller)

    def batch(self, windows: torch.Tensor, fps_x: int, **facts) -> torch.Tensor:
        """Several windows in one call (``[B, N, 3, H, W]``) where the model takes batches and runs
        untiled; otherwise, or once a batch has run out of memory, one window at a time."""
        if self.tile == 0 and not self._unbatched and hasattr(self.model, "batch"):
            try:
                return self.model.batch(windows, fps_x, **facts)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                del exc
                release_freed_memory(self.device)
                self.unbatch(f"out of memory on {self.device} with {len(windows)} windows a call: one at a time")
        import torch

        return torch.stack([self(window, fps_x, **facts) for window in windows])

    def unbatch(self, note: str) -> None:
        """One window a call from now on, and why."""
        self._unbatched = True
        self.notes.append(note)

    def _tiled(self, tile: int) -> TiledModel:
        if not self.exact_tiles and not self._said_inexact:
            self._said_inexact = True
            self.notes.append(
                "this model pools over the whole frame, so its tiles cannot give exactly what whole frames do: "
                "faint seams are possible (more memory, or --max-memory, avoids tiling)"
            )
        return TiledModel(self.model, tile, self.scale, self.context)

    def _smaller(self, frame_size: int) -> int | None:
        current = self.tile or frame_size
        floor = min_tile(self.context, self.size_multiple)
        smaller = max(floor, (current // 2) // self.size_multiple * self.size_multiple)
        return smaller if smaller < current and current > floor else None


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
