"""``load_model``: the one door from a model name to a ready network on a device."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stvsr_cli.errors import DeviceError, StvsrError, UnsupportedOptionError
from stvsr_cli.models.registry import ModelSpec, architecture, weights_dir


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
    """A network ready to run on a window of frames, with the facts the pipeline needs."""

    spec: ModelSpec
    module: nn.Module
    scale: int
    device: torch.device
    dtype: torch.dtype

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor, fps_x: int) -> torch.Tensor:
        """``[N, 3, H, W]`` in [0, 1] on ``device`` -> ``[fps_x*(N-1)+1, 3, sH, sW]`` clamped to [0, 1]."""
        batch = frames.to(self.dtype).unsqueeze(0)
        out = self.module(batch, fps_x=fps_x) if self.spec.fps_x_is_argument else self.module(batch)
        return out[0].clamp_(0, 1)


def load_model(
    spec: ModelSpec, *, scale: int, device: str | torch.device = "auto", half: bool | None = None
) -> Upscaler:
    """Build ``spec``'s network for ``scale``, load its weights strictly, move it to the device.

    ``half=None`` means float16 on CUDA where the model allows it, float32 otherwise.
    """
    spec.check_factors(scale=scale)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if half is None:
        half = dev.type == "cuda" and spec.half
    if half and dev.type != "cuda":
        raise UnsupportedOptionError("--half needs a CUDA device", "drop --half to run in float32 on the CPU")
    if half and not spec.half:
        raise UnsupportedOptionError(f"model '{spec.name}' does not support float16", "use --no-half")

    kwargs = dict(spec.params)
    if spec.scales is None:
        kwargs["scale"] = scale
    try:
        module = architecture(spec)(**kwargs)
    except TypeError as exc:
        raise StvsrError(f"model '{spec.name}': bad params for arch '{spec.arch}': {exc}") from None
    if spec.weights is not None:
        module.load_state_dict(_read_weights(spec), strict=True)
    dtype = torch.float16 if half else torch.float32
    module = module.eval().to(device=dev, dtype=dtype)
    return Upscaler(spec=spec, module=module, scale=scale, device=dev, dtype=dtype)


def _read_weights(spec: ModelSpec) -> dict[str, torch.Tensor]:
    assert spec.weights is not None
    if "://" in spec.weights:
        raise StvsrError(
            f"the weights of model '{spec.name}' must be downloaded ({spec.weights})",
            "downloading weights is not built yet; use --model classic",
        )
    path = weights_dir() / spec.weights
    if not path.is_file():
        raise StvsrError(f"weights file {path} of model '{spec.name}' is missing")
    from safetensors.torch import load_file

    return load_file(str(path))
