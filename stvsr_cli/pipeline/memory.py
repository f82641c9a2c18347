"""Memory as a budget: predict a model call's peak from its frame size, and pick tiles that fit.

Running out of host memory is not an exception Python can catch (the kernel kills the process), so
the tile size is chosen before the first call: a model's peak memory is, to a good approximation,
``fixed + per_pixel * pixels`` for a window of a given length (activations grow with the frame;
everything else does not). Two small probe calls measure both numbers once per model, device and
window; they are cached, so later runs start at once. ``tile_for_budget`` is then a pure function.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Self

from stvsr_cli.errors import UsageError
from stvsr_cli.hub import cache_dir
from stvsr_cli.pipeline.run import WindowModel
from stvsr_cli.pipeline.tiles import MIN_TILE, OutOfMemoryFallback, is_out_of_memory, min_tile, release_freed_memory

if TYPE_CHECKING:  # PyTorch is imported where a model is measured: a run on arrays never needs it
    import torch

    from stvsr_cli.models.loader import Upscaler

DEFAULT_SHARE = 0.7  # of the memory available at start, when no --max-memory is given
PROBE_SIDES = (40, 80)  # LR pixels: seconds with any shipped model on a CPU; measured largest first (see below)
_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str | int) -> int:
    """``4G``, ``512M``, ``1.5GB``, ``2GiB`` or a number of bytes -> bytes."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not match or float(match.group(1)) <= 0:
        raise UsageError(f"memory size '{text}' is not a size such as 4G, 512M or 1.5GB")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def format_size(size: int) -> str:
    return f"{size / 2**30:.1f} GB" if size >= 2**30 else f"{size / 2**20:.0f} MB"


def available_memory(device: torch.device) -> int:
    """Free GPU memory on CUDA; on the CPU the memory the system can still give (MemAvailable)."""
    if device.type == "cuda":
        import torch

        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def default_budget(device: torch.device) -> int:
    return int(DEFAULT_SHARE * available_memory(device))


@dataclass(frozen=True)
class MemoryProfile:
    """A model call's peak memory above what was in use before it: ``fixed + per_pixel * pixels``,
    ``pixels`` the LR frame's (or tile's) height x width, for a window of the probed length."""

    fixed: int
    per_pixel: float

    def peak(self, pixels: int) -> int:
        return int(self.fixed + self.per_pixel * pixels)


def tile_for_budget(
    profile: MemoryProfile, budget: int, height: int, width: int, multiple: int = 1, smallest: int = MIN_TILE
) -> int | None:
    """The tile side (LR pixels) whose predicted peak fits ``budget``: 0 when the whole frame fits,
    None when not even the ``smallest`` tile does. A pure function."""
    if profile.peak(height * width) <= budget:
        return 0
    side = math.isqrt(max(0, int((budget - profile.fixed) / max(profile.per_pixel, 1e-9))))
    side -= side % multiple
    return side if side >= smallest else None


class PeakMeter:
    """Peak memory of a block of work above what was in use when it began: CUDA's allocator
    statistics, or on Linux the process's resident high-water mark (reset through clear_refs)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    @staticmethod
    def works_on_cpu() -> bool:
        return _read_status("VmHWM") is not None and os.access("/proc/self/clear_refs", os.W_OK)

    def __enter__(self) -> Self:
        release_freed_memory(self.device)
        if self.device.type == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")  # the high-water mark restarts from the current resident size
            self.start = _read_status("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            import torch

            self.peak = torch.cuda.max_memory_allocated(self.device) - self.start
        else:
            self.peak = _read_status("VmHWM") - self.start


def measure_profile(
    model: WindowModel, frames: int, fps_x: int, sides: tuple[int, int] = PROBE_SIDES, notes: list[str] | None = None
) -> MemoryProfile:
    """Run ``model`` on random windows of ``frames`` frames at two sizes; fit ``fixed + per_pixel * pixels``.

    On the CPU the probes run in a fresh process: a process's resident size grows only where the
    allocator has nothing left from earlier work, so in a long-lived process (a batch, a test
    session) the same call measured 10-20 % lower from one time to the next; a fresh process
    measures what the call needs. Where the model cannot be sent there, it is measured here, and
    ``notes`` hears so."""
    if model.device.type == "cpu" and PeakMeter.works_on_cpu():
        measured = _probe_in_fresh_process(model, frames, fps_x, sides)
        if measured is not None:
            return _fit(*measured)
        if notes is not None:
            notes.append(
                "the memory budget's model could not be measured in a fresh process, so it was measured in this one, "
                "where earlier work can make it read up to 20 % low"
            )
    return _fit(*_probe(model, frames, fps_x, sides))


def _probe_in_fresh_process(
    model: WindowModel, frames: int, fps_x: int, sides: tuple[int, int]
) -> tuple[list[int], list[int]] | None:
    """``_probe`` in a new Python process (the model sent pickled on its standard input); None where
    the model cannot be sent (a compiled network) or the process fails."""
    try:
        payload = pickle.dumps((model, frames, fps_x, sides))
    except Exception:
        return None
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run(
        [sys.executable, "-c", "from stvsr_cli.pipeline.memory import _probe_stdin; _probe_stdin()"],
        input=payload, capture_output=True, env=env, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        return None
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result["peaks"], result["pixels"]


def _probe_stdin() -> None:
    """The fresh process's side: a pickled ``(model, frames, fps_x, sides)`` in, peaks out as JSON."""
    model, frames, fps_x, sides = pickle.loads(sys.stdin.buffer.read())  # sent by our own parent
    peaks, pixels = _probe(model, frames, fps_x, sides)
    print(json.dumps({"peaks": peaks, "pixels": pixels}))


def _probe(model: WindowModel, frames: int, fps_x: int, sides: tuple[int, int]) -> tuple[list[int], list[int]]:
    """The peaks of calls at ``sides`` (largest first), and their pixel counts."""
    import torch

    multiple = max(1, model.size_multiple)
    peaks = []
    pixels = []
    # Largest first: memory the allocator keeps from a call lowers the next call's measured peak, and
    # lowering the small one errs towards a steeper slope, a cautious prediction.
    for side in sorted(sides, reverse=True):
        side = -(-side // multiple) * multiple
        window = torch.rand(frames, 3, side, side, device=model.device)
        with PeakMeter(model.device) as meter:
            model(window, fps_x)
        peaks.append(meter.peak)
        pixels.append(side * side)
    return peaks, pixels


def _fit(peaks: list[int], pixels: list[int]) -> MemoryProfile:
    per_pixel = max(0.0, (peaks[0] - peaks[1]) / (pixels[0] - pixels[1]))
    return MemoryProfile(fixed=max(0, int(peaks[0] - per_pixel * pixels[0])), per_pixel=per_pixel)


def cached_profile(key: str, measure: Callable[[], MemoryProfile], cache: Path) -> MemoryProfile:
    """``measure()`` once per ``key``, kept in the JSON file ``cache``."""
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return MemoryProfile(**known[key])
    profile = measure()
    known[key] = asdict(profile)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only cache only costs the probe next time
    return profile


def resident_memory() -> int:
    """Memory the process holds now (0 where that cannot be read)."""
    return _read_status("VmRSS") or 0


def _read_status(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


HEADROOM = 1.2  # fresh-process probes predicted 1.1-1.3x a 96x160 call's real peak; keep a margin over that
OUTPUT_COPIES = 2  # a tiled window's float output, and its 8/16-bit copy on the way to the encoder
# Beside the model: the decoder, the frames queued for the encoder and the encoder's own look-ahead.
PIPELINE_FIXED = 64 * 2**20
PIPELINE_FRAMES = 32  # output frames of 3 bytes a pixel


def budgeted_runner(
    upscaler: Upscaler, *, window: int, fps_x: int, height: int, width: int,
    max_memory: int | None = None, tile: int = 0, batch_windows: int = 1,
) -> tuple[OutOfMemoryFallback, str | None]:  # fmt: skip
    """The model runner for frames of ``height`` x ``width``: tiled at ``tile`` when given, else at
    the largest tile whose predicted peak fits ``max_memory`` (default: a share of what is free
    now), overlapping by the model's context; and a note saying what was chosen, if tiling.
    ``batch_windows`` windows a call where whole frames fit that many times over (tiles: one).
    Where the budget cannot be measured, the runner's ``notes`` say what it then rests on."""
    warnings: list[str] = []
    tiling, batches_fit = None, True
    if not tile and height * width > max(PROBE_SIDES) ** 2:  # no forced size, a frame bigger than the probe
        tile, tiling, batches_fit = _tile_for_memory(
            upscaler, window, fps_x, height, width, max_memory, batch_windows, warnings
        )
    elif not tile and max_memory is not None and not _can_measure(upscaler.device):
        warnings.append(_unmeasured(max_memory))
    runner = OutOfMemoryFallback(
        upscaler, upscaler.scale, tile, context=upscaler.spec.context, exact_tiles=upscaler.exact_tiles
    )
    runner.notes.extend(warnings)
    if batch_windows > 1 and not batches_fit and not tile:
        runner.unbatch(f"{batch_windows} windows a call do not fit the memory budget: one window a call")
    return runner, tiling


def _can_measure(device: torch.device) -> bool:
    return device.type != "cpu" or PeakMeter.works_on_cpu()


def _unmeasured(max_memory: int) -> str:
    return (
        f"--max-memory {format_size(max_memory)}: this system cannot measure a process's memory (no "
        "/proc/self/clear_refs), so the budget rests on running out: whole frames, then smaller tiles each time "
        "memory runs out"
    )


def _tile_for_memory(
    upscaler: Upscaler, window: int, fps_x: int, height: int, width: int, max_memory: int | None, batch_windows: int,
    warnings: list[str],
) -> tuple[int, str | None, bool]:  # fmt: skip
    """``budgeted_runner``'s choice: the tile (0: whole frames), its note, and whether
    ``batch_windows`` whole windows fit in one call; what the budget rests on, where it cannot be
    measured, goes to ``warnings``."""
    import torch

    spec, device = upscaler.spec, upscaler.device
    if not _can_measure(device):
        if max_memory is not None:
            warnings.append(_unmeasured(max_memory))
        return 0, None, True  # nothing to measure with: whole frames, and the out-of-memory fallback
    budget = max_memory if max_memory is not None else default_budget(device)
    key = "|".join(
        str(part) for part in (
            spec.name, spec.arch, json.dumps(dict(spec.params), sort_keys=True), spec.sha256 or spec.weights,
            torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", upscaler.half, window, fps_x,
            torch.__version__,
        )
    )  # fmt: skip
    try:
        profile = cached_profile(
            key, lambda: measure_profile(upscaler, window, fps_x, notes=warnings), cache_dir() / "memory-profiles.json"
        )
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        del exc  # its traceback holds the probe's tensors
        release_freed_memory(device)  # not even the probe fits: leave it to the out-of-memory fallback
        return 0, None, False
    in_use = resident_memory() if device.type == "cpu" else torch.cuda.memory_allocated(device)
    out_pixels = height * width * upscaler.scale**2
    outputs = (fps_x * (window - 1) + 1) * 3 * out_pixels * 4 * OUTPUT_COPIES
    outputs += PIPELINE_FIXED + PIPELINE_FRAMES * 3 * out_pixels
    cautious = MemoryProfile(int(profile.fixed * HEADROOM), profile.per_pixel * HEADROOM)
    if batch_windows > 1:  # activations and outputs grow with the batch; the weights do not
        batched = MemoryProfile(cautious.fixed, cautious.per_pixel * batch_windows)
        if tile_for_budget(batched, budget - in_use - outputs * batch_windows, height, width) == 0:
            return 0, None, True
    smallest = min_tile(spec.context, upscaler.size_multiple)
    chosen = tile_for_budget(cautious, budget - in_use - outputs, height, width, upscaler.size_multiple, smallest)
    if chosen is None:
        raise UsageError(
            f"--max-memory {format_size(budget)} is too small for model '{spec.name}' on {width}x{height} frames "
            f"(at least {format_size(in_use + outputs + cautious.peak(smallest * smallest))})",
            "raise --max-memory, or use a shorter --window or a lighter model",
        )
    if not chosen:
        return 0, None, batch_windows == 1
    peak = in_use + outputs + cautious.peak(chosen * chosen)
    note = f"memory budget {format_size(budget)}: tiles of {chosen} px (predicted peak {format_size(peak)})"
    return chosen, note, False
