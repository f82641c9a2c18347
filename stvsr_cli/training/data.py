"""Training data: clips decoded once into uint8 frames, random patches drawn deterministically per step.

A sample is ``fps_x * (frames_in - 1) + 1`` consecutive ground-truth frames (7 for 4 inputs at
x2) cropped to ``patch`` x ``patch`` HR pixels, with random flips, 90-degree rotations and temporal
reversal. The input is every ``fps_x``-th frame, downscaled with the eval protocol's antialiased
bicubic and rounded to 8 bits (or, with ``degradation="blur"``, the temporal blur of
``evaluation.degrade_tensor``, the same function ``stvsr eval`` uses; with ``degradation="film"``
the old-film pipeline of ``film.py``, each sample drawing new parameters from (seed, s, its index));
the target is every frame. Batch ``s`` depends only on (seed, s), so a resumed run sees exactly the
batches an uninterrupted one would have.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from stvsr_cli.errors import InputError
from stvsr_cli.evaluation import check_degradation, degrade_tensor, find_clips, read_clip
from stvsr_cli.training.split import is_held_out


@dataclass(frozen=True)
class FrameCache:
    """Every clip's frames, ``[T, H, W, 3]`` uint8 each (in memory, or memory-mapped from disk)."""

    names: list[str]
    clips: list[np.ndarray]
    held_out: list[Path] = field(default_factory=list)  # clips given but never trained on (``split.VAL_UNSEEN``)
    left_out: list[str] = field(default_factory=list)  # clips ``keep`` refused (e.g. not permissively licensed)

    @property
    def frame_count(self) -> int:
        return sum(len(c) for c in self.clips)


def load_frames(
    data: Sequence[Path | str], cache_dir: Path | None = None, keep: Callable[[str], bool] | None = None
) -> FrameCache:
    """Decode every clip once, but the held-out ones (``split.VAL_UNSEEN``), which are listed in
    ``held_out`` instead, and those whose name ``keep`` refuses (``left_out``). With ``cache_dir`` the frames are kept there as ``.npy`` files (keyed by
    path, size and modification time) and memory-mapped on later runs."""
    names, arrays, held_out, left_out = [], [], [], []
    for clip in find_clips(data):
        if is_held_out(clip.name):
            held_out.append(clip.path)  # kept for judging generalisation: never trained on
            continue
        if keep is not None and not keep(clip.name):
            left_out.append(clip.name)
            continue
        cached = None
        if cache_dir is not None:
            stat = clip.path.stat()
            key = hashlib.sha256(f"{clip.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
            cached = cache_dir / f"{clip.name}-{key}.npy"
            if cached.is_file():
                names.append(clip.name)
                arrays.append(np.load(cached, mmap_mode="r"))
                continue
        frames = read_clip(clip)
        if not frames:
            continue
        if len({f.shape for f in frames}) != 1:
            raise InputError(f"clip '{clip.name}' changes size between frames")
        array = np.stack(frames)
        if cached is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".tmp.npy")
            np.save(tmp, array)
            tmp.replace(cached)
        names.append(clip.name)
        arrays.append(array)
    return FrameCache(names, arrays, held_out, left_out)


class PatchSampler:
    """Random training patches from a frame cache."""

    def __init__(
        self, cache: FrameCache, *, frames_in: int, fps_x: int, patch: int, scale: int, seed: int = 0,
        time_factors: Sequence[int] | None = None, degradation: str = "standard",
    ) -> None:  # fmt: skip
        if patch % scale:
            raise InputError(f"--patch {patch} must be a multiple of the scale {scale}")
        check_degradation(degradation)
        self.degradation = degradation
        # Models with arbitrary output times learn several: each batch draws its factor k from
        # ``time_factors`` (its in-between frames are then at t = 1/k, ..., (k-1)/k).
        self.time_factors = tuple(time_factors or (fps_x,))
        self.frames_in = frames_in
        self.length = max(self.time_factors) * (frames_in - 1) + 1
        self.fps_x, self.patch, self.scale, self.seed = fps_x, patch, scale, seed
        self.clips = [c for c in cache.clips if len(c) >= self.length and min(c.shape[1:3]) >= patch]
        if not self.clips:
            raise InputError(f"no clip has {self.length} frames of at least {patch}x{patch} pixels")
        # Weight clips by how many sequences they hold, so every sequence is equally likely.
        counts = torch.tensor([len(c) - self.length + 1 for c in self.clips], dtype=torch.float64)
        self.weights = counts / counts.sum()

    def batch(self, step: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch number ``step``: (LR input ``[B, N, 3, p/s, p/s]``, HR target ``[B, L, 3, p, p]``), float in [0, 1]."""
        return self.degrade(self.crops(step, size), step)

    def degrade(self, crops: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(input, target) from ``crops(step, ...)``, on whatever device the crops are (the GPU's is
        faster than one CPU thread at large batches)."""
        target = crops.float() / 255
        lr = degrade_tensor(target, self.factor(step), self.scale, self.degradation, seed=(self.seed, step))
        return lr, target

    def crops(self, step: int, size: int) -> torch.Tensor:
        """Batch ``step``'s ground truth ``[B, L, 3, p, p]`` uint8: a quarter of the bytes to copy of float32."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        length = self.factor(step) * (self.frames_in - 1) + 1
        samples = []
        for _ in range(size):
            clip = self.clips[int(torch.multinomial(self.weights, 1, generator=gen))]
            t = int(torch.randint(len(clip) - length + 1, (1,), generator=gen))
            y = int(torch.randint(clip.shape[1] - self.patch + 1, (1,), generator=gen))
            x = int(torch.randint(clip.shape[2] - self.patch + 1, (1,), generator=gen))
            seq = torch.from_numpy(np.ascontiguousarray(clip[t : t + length, y : y + self.patch, x : x + self.patch]))
            flips = torch.randint(2, (4,), generator=gen).tolist()
            if flips[0]:
                seq = seq.flip(2)  # horizontal
            if flips[1]:
                seq = seq.flip(1)  # vertical
            if flips[2]:
                seq = seq.transpose(1, 2)  # with the flips: all eight 90-degree rotations and mirrors
            if flips[3]:
                seq = seq.flip(0)  # time runs backwards
            samples.append(seq)
        return torch.stack(samples).permute(0, 1, 4, 2, 3).contiguous()

    def factor(self, step: int) -> int:
        """The time factor of batch ``step`` (always ``fps_x`` unless several are drawn from)."""
        if len(self.time_factors) == 1:
            return self.time_factors[0]
        gen = torch.Generator().manual_seed(self.seed * 7_919 + step + 1)
        return self.time_factors[int(torch.randint(len(self.time_factors), (1,), generator=gen))]


class Prefetcher:
    """Builds the next batches in a background thread so that the model never waits for data.
    ``crops_only`` yields batch ``s``'s uint8 ``crops`` (pinned), for ``degrade`` on the GPU."""

    def __init__(
        self, sampler: PatchSampler, size: int, first_step: int, depth: int = 4, crops_only: bool = False
    ) -> None:
        self._crops_only = crops_only
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sampler, size, first_step), daemon=True)
        self._thread.start()

    def _run(self, sampler: PatchSampler, size: int, step: int) -> None:
        while not self._stop.is_set():
            item = sampler.crops(step, size).pin_memory() if self._crops_only else sampler.batch(step, size)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            step += 1

    def next(self):
        return self._queue.get()

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
