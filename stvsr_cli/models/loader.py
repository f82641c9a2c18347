"""``load_model``: the one door from a model name to a ready network on a device."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from stvsr_cli import hub
from stvsr_cli.errors import DeviceError, StvsrError, UnsupportedOptionError
from stvsr_cli.models.base import VideoSRNet
from stvsr_cli.models.ops.dcn import pick_deform_conv, use_deform_conv
from stvsr_cli.models.registry import ModelSpec
from stvsr_cli.models.speed import Speed


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks the first CUDA GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise UnsupportedOptionError(f"unknown device '{device}'", "use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device '{device}' requested but CUDA is not available", "use --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise DeviceError(f"device '{device}' does not exist ({count} CUDA device{'' if count == 1 else 's'})")
    elif resolved.type != "cpu":
        raise UnsupportedOptionError(f"unsupported device '{device}'", "use auto, cpu, cuda or cuda:N")
    return resolved


@dataclass
class Upscaler:
    """A network ready to run on a window of frames, with the facts the pipeline needs.

    Weights stay float32; ``half`` runs the network under float16 autocast (CUDA only), which keeps
    numerically touchy operations (sampling positions, reductions) in float32.
    """

    spec: ModelSpec
    module: VideoSRNet
    scale: int
    device: torch.device
    half: bool

    @property
    def arbitrary_times(self) -> bool:
        return self.spec.arbitrary_times

    @property
    def shot_edges(self) -> bool:
        """Whether the network treats a window's edges differently where its shot ends (``edges=``)."""
        return self.module.shot_edges

    @property
    def size_multiple(self) -> int:
        """The network pads its input to this multiple (tiles cut at it waste nothing)..."""
        return self.module.size_multiple

    @property
    def pad_mode(self) -> str:
        """... this way (``F.pad`` mode): tiles of a frame are cut from it padded the same."""
        return self.module.pad_mode

    @property
    def exact_tiles(self) -> bool:
        """Whether tiles give what whole frames do (not where a layer pools over the whole frame)."""
        return self.module.exact_tiles

    def __call__(self, frames: torch.Tensor, fps_x: int, **facts) -> torch.Tensor:
        """``[N, 3, H, W]`` in [0, 1] on ``device`` -> ``[fps_x*(N-1)+1, 3, sH, sW]`` clamped to [0, 1];
        or, with ``times`` (positions from 0 to N-1, for models with arbitrary times), one frame per
        time. ``edges=(opens_shot, closes_shot)`` goes to networks with ``shot_edges``."""
        return self.batch(frames.unsqueeze(0), fps_x, **facts)[0]

    @torch.inference_mode()
    def batch(
        self, windows: torch.Tensor, fps_x: int, times: list | None = None, edges: tuple[bool, bool] | None = None
    ) -> torch.Tensor:
        """Several windows of one shape in one call: ``[B, N, 3, H, W]`` -> ``[B, M, 3, sH, sW]``."""
        times = None if times is None else [float(t) for t in times]
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.half):
            out = self.module.run(windows.float(), fps_x, times=times, edges=edges if self.shot_edges else None)
        return out.float().clamp_(0, 1)


def refuse_half_off_cuda(half: bool | None, device: torch.device) -> None:
    """float16 only on CUDA: CPUs without AVX512-FP16 (most) run its convolutions 15-50x slower
    than float32 (``training.trainer.cpu_autocast_is_fast``)."""
    if half and device.type != "cuda":
        raise UnsupportedOptionError("--half needs a CUDA device", "drop --half to run in float32 on the CPU")


def load_model(
    spec: ModelSpec,
    *,
    scale: int,
    device: str | torch.device = "auto",
    half: bool | None = None,
    weights: Path | str | None = None,
    offline: bool | None = None,
    progress: hub.Progress | None = None,
    speed: Speed | None = None,
    random_weights: bool = False,
) -> Upscaler:
    """Build ``spec``'s network for ``scale``, load its weights strictly, move it to the device.

    The weights are the registry's (downloaded, verified and cached on first use; ``offline``
    forbids the download) unless ``weights`` names a local file (safetensors or a PyTorch state
    dict) to use instead. A learned network with neither is refused, unless ``random_weights``
    (for tests and benchmarks: its seeded initialisation). ``half=None`` means float16 autocast on
    CUDA where the model allows it. ``speed`` says how it runs (layout, compiling; see ``models.speed``).
    """
    spec.check_factors(scale=scale)
    speed = speed or Speed()
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    speed.check_device(dev.type)
    if half is None:
        half = dev.type == "cuda" and spec.half
    refuse_half_off_cuda(half, dev)
    if half and not spec.half:
        raise UnsupportedOptionError(f"model '{spec.name}' does not support float16", "use --no-half")

    if weights is not None:
        spec = _spec_for_file(spec, Path(weights))
    try:
        module = spec.build(scale)
    except TypeError as exc:
        raise StvsrError(f"model '{spec.name}': bad params for arch '{spec.arch}': {exc}") from None
    if weights is not None:
        path = Path(weights)
    elif spec.weights is not None:
        path = hub.weights_file(spec, offline=offline, progress=progress)
    elif spec.architecture.learned and not random_weights:
        raise hub.WeightsError(
            f"model '{spec.name}' has no weights: an untrained '{spec.arch}' network would make noise",
            "name them in its registry entry ('weights'), or give --weights FILE",
        )
    else:
        path = None
    if path is not None:
        hub.load_strict(module, hub.read_state_dict(path), spec, path)
    module = module.eval().requires_grad_(False).to(dev)
    if speed.uses_channels_last(dev.type):
        module = module.to(memory_format=torch.channels_last)  # cuDNN's fast layout for convolutions
    use_deform_conv(module, pick_deform_conv(dev, speed.deform_conv))  # chosen once per model, not per call
    if speed.compile_mode is not None:
        keep_compiled_code()
        # In place: ``run`` pads and calls the module, whose forward is then the compiled one.
        module.compile(mode=speed.compile_mode, dynamic=False)
    return Upscaler(spec=spec, module=module, scale=scale, device=dev, half=half)


COMPILE_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def keep_compiled_code() -> Path:
    """Where ``torch.compile`` keeps what it compiled (inductor's kernels and its FX graph cache):
    stvsr's cache folder unless ``TORCHINDUCTOR_CACHE_DIR`` says otherwise, instead of a folder in
    /tmp that a reboot empties; a later run of the same network and window shape then loads its
    kernels instead of compiling them again."""
    os.environ.setdefault(COMPILE_CACHE_ENV, str(hub.cache_dir() / "torch-compile"))
    return Path(os.environ[COMPILE_CACHE_ENV])


def _spec_for_file(spec: ModelSpec, path: Path) -> ModelSpec:
    """A weights file written by ``stvsr train`` says which network it fits: use its params."""
    if not path.is_file():
        raise StvsrError(f"weights file {path} not found")
    recorded = hub.read_architecture(path)
    if recorded is None:
        return spec
    arch, params = recorded
    if arch != spec.arch:
        raise UnsupportedOptionError(
            f"weights file {path.name} is for arch '{arch}', model '{spec.name}' is arch '{spec.arch}'",
            f"use --model with a model of arch '{arch}'",
        )
    return replace(spec, params=params)


def cuda_devices() -> list[str]:
    """Every CUDA GPU here, as device names (``cuda:0``, ...); none without CUDA."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{i}" for i in range(count)]
