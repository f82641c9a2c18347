"""How a network runs, never what it computes: the speed-ups ``stvsr upscale`` and ``stvsr bench``
switch on and off one by one, so that each is measured against the plain run.

No PyTorch here: options are checked where they are parsed; ``models.loader`` applies them.
"""

from __future__ import annotations

from dataclasses import dataclass

from stvsr_cli.errors import UnsupportedOptionError, UsageError

MAX_BATCH_WINDOWS = 64
# Copy streams on CUDA by default? Off until measured on a GPU against the plain copies (each
# speed default is chosen by measurement).
COPY_STREAM_ON_CUDA = False
DEFORM_CONVS = ("auto", "torch", "torchvision", "triton")  # as models.ops.dcn, which imports PyTorch


@dataclass(frozen=True)
class Speed:
    """``channels_last``: convolutions in NHWC (None: on CUDA, cuDNN's fast layout; off on the CPU).
    ``compile``: ``torch.compile`` the network (inductor; compiled once per window shape, the first
    call of each shape pays for it). ``cuda_graphs``: compile and replay the window's kernels as
    CUDA graphs (``mode="reduce-overhead"``; CUDA only). ``batch_windows``: up to this many windows
    of the same shape in one model call, for small frames that leave a GPU idle. ``copy_stream``:
    frames to and from the GPU on a CUDA stream of their own, from page-locked buffers, while the
    model works on the next window (None: ``COPY_STREAM_ON_CUDA`` on CUDA; see ``pipeline.transfer``). ``deform_conv``:
    the deformable convolution's implementation (``models.ops.dcn.pick_deform_conv``)."""

    channels_last: bool | None = None
    compile: bool = False
    cuda_graphs: bool = False
    batch_windows: int = 1
    copy_stream: bool | None = None
    deform_conv: str = "auto"

    def __post_init__(self) -> None:
        if not 1 <= self.batch_windows <= MAX_BATCH_WINDOWS:
            raise UsageError(f"--batch-windows must be between 1 and {MAX_BATCH_WINDOWS}")
        if self.deform_conv not in DEFORM_CONVS:
            raise UsageError(f"--deform-conv must be one of {', '.join(DEFORM_CONVS)}")

    def check_device(self, device_type: str) -> None:
        """Refuse, in one line, what ``device_type`` cannot do."""
        if self.cuda_graphs and device_type != "cuda":
            raise UnsupportedOptionError("--cuda-graphs needs a CUDA device", "drop --cuda-graphs, or use --compile")
        if self.copy_stream and device_type != "cuda":
            raise UnsupportedOptionError("--copy-stream needs a CUDA device", "drop --copy-stream")

    def uses_channels_last(self, device_type: str) -> bool:
        return self.channels_last if self.channels_last is not None else device_type == "cuda"

    def uses_copy_stream(self, device_type: str) -> bool:
        if self.copy_stream is not None:
            return self.copy_stream
        return device_type == "cuda" and COPY_STREAM_ON_CUDA

    @property
    def compile_mode(self) -> str | None:
        """``torch.compile``'s mode, or None for no compiling."""
        if self.cuda_graphs:
            return "reduce-overhead"
        return "default" if self.compile else None
