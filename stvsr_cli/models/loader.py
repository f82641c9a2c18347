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
            raise DeviceError(f"device '{device}' does not exist ({torch.cuda.device_count()} CUDA devices)")
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
    def size_multiple(self) -> int:
        """The network pads its input to this multiple (tiles cut at it waste nothing)."""
        return self.module.size_multiple

    def __call__(self, frames: torch.Tensor, fps_x: int, times: list | None = None) -> torch.Tensor:
        """``[N, 3, H, W]`` in [0, 1] on ``device`` -> ``[fps_x*(N-1)+1, 3, sH, sW]`` clamped to [0, 1];
        or, with ``times`` (positions from 0 to N-1, for models with arbitrary times), one frame per time."""
        return self.batch(frames.unsqueeze(0), fps_x, times)[0]

    @torch.inference_mode()
    def batch(self, windows: torch.Tensor, fps_x: int, times: list | None = None) -> torch.Tensor:
        """Several windows of one shape in one call: ``[B, N, 3, H, W]`` -> ``[B, M, 3, sH, sW]``."""
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.half):
            out = self.module.run(windows.float(), fps_x, times=None if times is None else [float(t) for t in times])
        out = out.float().clamp_(0, 1)
        for inputs, outputs in zip(windows, out):
            grey = grey_if_grey(inputs, outputs)
            if grey is not outputs:
                outputs.copy_(grey)
        return out


# Grey input: every pixel's channels within this of their mean (8-bit YUV with neutral chroma decodes
# to RGB within a level of grey; a tinted or sepia film is further off).
GREY_TOLERANCE = 1.5 / 255
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # BT.601; for a near-grey picture the matrix changes Y by far under a level


def grey_if_grey(inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """Black-and-white in, black-and-white out: when every input frame ``[N, 3, H, W]`` is grey, the
    outputs become their luma in all three channels. A network trained on colour (or on films made
    grey at random, as ``--degradation film`` does) otherwise guesses colour from grey, a faint tint."""
    if (inputs - inputs.mean(dim=1, keepdim=True)).abs().amax() > GREY_TOLERANCE:
        return outputs
    weights = torch.tensor(LUMA_WEIGHTS, dtype=outputs.dtype, device=outputs.device).view(1, 3, 1, 1)
    return (outputs * weights).sum(dim=1, keepdim=True).expand_as(outputs).contiguous()


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
) -> Upscaler:
    """Build ``spec``'s network for ``scale``, load its weights strictly, move it to the device.

    The weights are the registry's (downloaded, verified and cached on first use; ``offline``
    forbids the download) unless ``weights`` names a local file (safetensors or a PyTorch state
    dict) to use instead. ``half=None`` means float16 autocast on CUDA where the model allows it.
    ``speed`` says how it runs (layout, compiling; see ``models.speed``).
    """
    spec.check_factors(scale=scale)
    speed = speed or Speed()
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    speed.check_device(dev.type)
    if half is None:
        half = dev.type == "cuda" and spec.half
    if half and dev.type != "cuda":
        raise UnsupportedOptionError("--half needs a CUDA device", "drop --half to run in float32 on the CPU")
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
