"""``VideoSRNet``: the one protocol every architecture follows.

The loader, the pipeline, the trainer and the exporter read a network's facts from here, never by
probing for attributes: its scale, the time factors its ``forward`` takes, whether it makes frames at
arbitrary times, the size its input must be a multiple of, the constructor parameter (if any) that
sizes it for its window, and, for training, its loss and the stages of its schedule.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from stvsr_cli.models.ops.losses import charbonnier
from stvsr_cli.models.registry import ARCHITECTURES


class VideoSRNet(nn.Module):
    """Input ``[B, N, 3, h, w]`` in [0, 1]; ``forward(frames, fps_x)`` gives
    ``[B, fps_x*(N-1)+1, 3, scale*h, scale*w]`` (output ``fps_x*i`` is input frame i), and, where
    ``arbitrary_times``, ``forward(frames, fps_x, times=[...])`` one frame per time (0 to N-1).

    Where ``shot_edges``, ``forward(frames, fps_x, edges=(opens_shot, closes_shot))`` is told whether
    the window's first and last frames are the first and last of their shot (else the clip goes on
    beyond them).

    ``forward`` may assume ``h`` and ``w`` are multiples of ``size_multiple``; call ``run``, which pads
    to that multiple (``pad_mode``, the edge replicated unless the network says otherwise) and crops the
    output, to take any size.
    """

    scale: int = 4
    # What the architecture can do, from its entry in ``registry.ARCHITECTURES`` (declared there once):
    time_factors: ClassVar[tuple[int, ...] | None] = (2,)  # the fps_x it is made (and trained) for; None: any
    arbitrary_times: ClassVar[bool] = False  # forward takes ``times``
    window_param: ClassVar[str | None] = None  # the constructor parameter that sizes it for its window
    shot_edges: ClassVar[bool] = False  # forward takes ``edges``: which window edges are its shot's
    exact_tiles: ClassVar[bool] = True  # False where a layer pools over the whole frame: tiles change the output
    size_multiple: int = 1  # input height and width must be multiples of this
    pad_mode: str = "replicate"  # how ``run`` pads to it (``F.pad`` mode)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        for arch in ARCHITECTURES.values():
            if arch.path == f"{cls.__module__}:{cls.__qualname__}":
                cls.time_factors, cls.arbitrary_times, cls.window_param = (
                    arch.time_factors, arch.arbitrary_times, arch.window_param
                )  # fmt: skip
                cls.shot_edges, cls.exact_tiles = arch.shot_edges, arch.exact_tiles
    stage_ends: ClassVar[tuple[float, ...]] = ()  # training schedule stages, as shares of the run
    loss_description: ClassVar[str] = "Charbonnier loss"

    def run(
        self, frames: torch.Tensor, fps_x: int = 2, times: list[float] | None = None,
        edges: tuple[bool, bool] | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """``forward`` on any frame size: pad to ``size_multiple`` once, here, and crop back.
        ``times`` and ``edges`` go to ``forward`` where given."""
        *lead, h, w = frames.shape
        m = self.size_multiple
        ph, pw = -h % m, -w % m
        if ph or pw:
            flat = frames.reshape(-1, *frames.shape[-3:])
            frames = F.pad(flat, (0, pw, 0, ph), mode=self.pad_mode).view(*lead, h + ph, w + pw)
        facts = {key: value for key, value in (("times", times), ("edges", edges)) if value is not None}
        out = self(frames, fps_x, **facts)
        return out[..., : self.scale * h, : self.scale * w] if ph or pw else out

    @classmethod
    def training_time_factors(cls) -> tuple[int, ...] | None:
        """The time factors a training batch draws from: x2/x3/x4 for arbitrary times, the declared
        factors, or None (any integer: the trainer's ``--fps-x``)."""
        if cls.arbitrary_times:
            return (2, 3, 4)
        return cls.time_factors

    def training_loss(self, frames: torch.Tensor, target: torch.Tensor, fps_x: int, progress: float) -> torch.Tensor:
        """The loss of one batch: ``frames`` ``[B, N, 3, h, w]``, ``target`` ``[B, fps_x*(N-1)+1, 3, sh, sw]``;
        ``progress`` is the share of the run done (for staged schedules, so a resumed run is exact).
        The default is Charbonnier on the output; networks with auxiliary terms override it."""
        output = self.run(frames, fps_x)
        if output.shape != target.shape:
            raise ValueError(f"gives {tuple(output.shape)} for the target {tuple(target.shape)}")
        return charbonnier(output.float(), target)
