"""Frames to the model's device and back: page-locked buffers, a copy stream, and what comes back.

With ``side_stream`` (CUDA only) the copies run on streams of their own (one for uploads, one for
downloads) from page-locked host memory: a window's upload overlaps the previous window's model,
its download the next window's, and the run loop collects a window's frames only after it has
queued the next window (``deferred``).
With ``layout`` the frames are converted to the encoder's YUV planes on the device, so only those
come back (``planes``); without it, RGB arrays of the input's dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from stvsr_cli.pipeline.planes import PlaneLayout, Planes, rgb_to_planes, split_planes

if TYPE_CHECKING:
    import torch

PLANES_CHUNK = 4  # frames converted to planes at once
Frame = np.ndarray | Planes
Pending = Callable[[], list[Frame]]  # call to wait for a download and get its frames


def to_tensor(frames: list[np.ndarray], device: torch.device, pin_memory: bool = True) -> torch.Tensor:
    """``N x [H, W, 3]`` uint8/uint16 -> ``[N, 3, H, W]`` float32 in [0, 1] on ``device``."""
    return Transfers(device, pinned=pin_memory).upload(frames)


def to_arrays(frames: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    """``[M, 3, H, W]`` in [0, 1] -> ``[M, H, W, 3]`` of ``dtype``, rounded to nearest."""
    return _host(_rgb_samples(frames, dtype)).astype(dtype, copy=False)


class Transfers:
    """Uploads and downloads for a model on ``device``. ``pinned``: host buffers page-locked (CUDA
    copies from them run asynchronously; off is the plain baseline). ``side_stream``: copies on
    their own CUDA stream, overlapping the model. ``layout``: frames come back as the encoder's
    planes, converted on the device."""

    def __init__(
        self, device: torch.device, *, pinned: bool = True, side_stream: bool = False,
        layout: PlaneLayout | None = None,
    ) -> None:  # fmt: skip
        import torch

        self.device = device
        self.cuda = device.type == "cuda"
        self.pinned = pinned and self.cuda
        self.layout = layout
        # Two copy streams: an upload queued behind the previous download (which waits for the
        # previous window's model) could not run beside that model.
        streams = side_stream and self.cuda
        self._upload_stream = torch.cuda.Stream(device) if streams else None
        self._download_stream = torch.cuda.Stream(device) if streams else None

    @property
    def deferred(self) -> bool:
        """Whether a download is collected later than it is queued (the copy overlaps the next window)."""
        return self._download_stream is not None

    def upload(self, frames: list[np.ndarray]) -> torch.Tensor:
        """``N x [H, W, 3]`` uint8/uint16 -> ``[N, 3, H, W]`` float32 in [0, 1] on the device."""
        import torch

        stack = np.stack(frames)
        peak = 255.0 if stack.dtype == np.uint8 else 65535.0
        if stack.dtype == np.uint16:
            stack = stack.astype(np.int32)  # torch has no uint16 arithmetic on every device
        host = torch.from_numpy(stack)
        if self.pinned:
            host = host.pin_memory()  # page-locked: the copy runs asynchronously
        if self._upload_stream is None:
            tensor = host.to(self.device, non_blocking=True)
        else:
            compute = torch.cuda.current_stream(self.device)
            with torch.cuda.stream(self._upload_stream):
                tensor = host.to(self.device, non_blocking=True)
            compute.wait_stream(self._upload_stream)
            tensor.record_stream(compute)  # made on the copy stream, used on the compute one
        return tensor.permute(0, 3, 1, 2).float().div_(peak)

    def download(self, frames: torch.Tensor, dtype: np.dtype) -> Pending:
        """Queue ``[M, 3, H, W]`` in [0, 1] to come back to the host (planes, or arrays of ``dtype``);
        the returned call waits for the copy and gives the frames, in order."""
        import torch

        layout = self.layout
        if layout is not None:  # a few frames at a time: the conversion's float temporaries stay small
            samples = torch.cat([rgb_to_planes(chunk, layout) for chunk in frames.split(PLANES_CHUNK)])
        else:
            samples = _rgb_samples(frames, dtype)
        stream = self._download_stream
        if stream is None:
            host = _host(samples, self.pinned)
            return lambda: _frames(host, layout, dtype)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            host = torch.empty(samples.shape, dtype=samples.dtype, pin_memory=True)
            host.copy_(samples, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(stream)
        samples.record_stream(stream)  # made on the compute stream, read on the copy one

        def collect() -> list[Frame]:
            copied.synchronize()
            return _frames(host.numpy(), layout, dtype)

        return collect


def _rgb_samples(frames: torch.Tensor, dtype: np.dtype) -> torch.Tensor:
    """``[M, 3, H, W]`` in [0, 1] -> ``[M, H, W, 3]`` rounded samples (uint8, or int32 for 16 bits)."""
    import torch

    peak = 255.0 if dtype == np.uint8 else 65535.0
    scaled = frames.float().mul(peak).round_().clamp_(0, peak)
    scaled = scaled.to(torch.uint8) if dtype == np.uint8 else scaled.to(torch.int32)
    return scaled.permute(0, 2, 3, 1).contiguous()


def _host(samples: torch.Tensor, pinned: bool = False) -> np.ndarray:
    if samples.device.type == "cpu":
        return samples.numpy()
    if not pinned:
        return samples.cpu().numpy()
    import torch

    host = torch.empty(samples.shape, dtype=samples.dtype, pin_memory=True)
    host.copy_(samples)  # synchronous, but at page-locked speed
    return host.numpy()


def _frames(host: np.ndarray, layout: PlaneLayout | None, dtype: np.dtype) -> list[Frame]:
    if layout is not None:
        return list(split_planes(host, layout))
    return list(host.astype(dtype, copy=False))
