"""The ``film`` degradation: low-res, low-rate input that looks like an old film transfer.

In the spirit of Real-ESRGAN's degradation model (random blur, resize, noise and compression) and
of the old-film restoration papers' artefacts, a clip of ground truth ``[L, 3, H, W]`` becomes its
input ``[N, 3, H/s, W/s]`` (frames 0, k, 2k, ... as in the standard protocol, ``N = (L - 1) // k + 1``)
by these steps, in this order:

1. blur, one kernel for the clip: Gaussian (anisotropic, at an angle), defocus (a disc) or motion
   (a line at an angle), on the HR frames;
2. downscale to exactly 1/s with a random kernel (antialiased bicubic, antialiased bilinear or area);
3. flicker: each frame's brightness and contrast jitter about mid-grey;
4. film grain and noise, new every frame, strongest in the mid-tones, one grain for all channels or
   (less often) apart per channel, a little clumped;
5. dust and blotches: dark or bright soft spots, each one or two frames long;
6. vertical scratches, each a few frames long, drifting a little sideways;
7. grey (BT.601 luma in all channels) with some probability;
8. compression: a real H.264 or MPEG-2 encode and decode through PyAV at a random quality, which
   also rounds to 8 bits.

Every random range is in ``FilmSettings``. ``draw_params`` draws one clip's parameters from a numpy
``Generator``; ``apply_film`` applies them (noise drawn from the same generator); both are pure
functions of their arguments. Random fields are drawn on the CPU and moved to the frames' device,
so a seed gives the same input on the CPU and on a GPU (up to float rounding); only the
compression step leaves the device (an in-memory encode on the CPU).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import av
import numpy as np
import torch
import torch.nn.functional as F

Range = tuple[float, float]


@dataclass(frozen=True)
class FilmSettings:
    """Every range the film degradation draws from (uniformly; once per clip unless said)."""

    blur_p: float = 0.8  # chance that a clip is blurred at all
    blur_kinds: tuple[str, ...] = ("gaussian", "defocus", "motion")
    gaussian_sigma: Range = (0.4, 2.5)  # HR px, each axis of the ellipse, at a random angle
    defocus_radius: Range = (1.0, 3.5)  # HR px, a disc
    motion_length: Range = (2.0, 9.0)  # HR px, a line at a random angle
    resize_modes: tuple[str, ...] = ("bicubic", "bilinear", "area")
    flicker_brightness: Range = (0.0, 0.06)  # amplitude A: each frame's offset uniform in [-A, A]
    flicker_contrast: Range = (0.0, 0.10)  # amplitude C: each frame's gain uniform in [1 - C, 1 + C]
    grain_sigma: Range = (0.01, 0.06)  # noise std at mid-grey ([0, 1] units); a quarter of it at black/white
    grain_size: Range = (0.0, 0.8)  # LR px, Gaussian sigma of the grain's clumps (0: white noise)
    colour_noise_p: float = 0.3  # chance that each channel has its own noise (else one grain for all)
    dust_rate: Range = (0.0, 2.0)  # new spots per frame (Poisson mean)
    dust_radius: Range = (0.5, 2.5)  # LR px (a blotch at the top end)
    dust_opacity: Range = (0.6, 1.0)
    dust_two_frames_p: float = 0.3  # chance that a spot stays for a second frame
    scratch_rate: Range = (0.0, 0.4)  # new scratches per frame (Poisson mean)
    scratch_frames: tuple[int, int] = (2, 6)  # how many frames one lasts, both ends included
    scratch_width: Range = (0.4, 1.2)  # LR px
    scratch_opacity: Range = (0.2, 0.6)
    scratch_drift: float = 0.3  # LR px, std of the sideways step from one frame to the next
    grey_p: float = 0.3  # chance that the clip is black and white
    codecs: tuple[str, ...] = ("h264", "mpeg2")
    h264_crf: tuple[int, int] = (18, 36)  # both ends included
    mpeg2_q: tuple[int, int] = (2, 16)  # fixed quantiser, both ends included


FILM = FilmSettings()


@dataclass(frozen=True)
class Spot:
    """A dust spot or blotch: a soft ellipse over ``frames`` frames from ``first``."""

    first: int
    frames: int
    y: float
    x: float
    radius: float
    aspect: float  # minor / major axis
    angle: float
    value: float  # dark (dust on the print) or bright (on the negative)
    opacity: float


@dataclass(frozen=True)
class Scratch:
    """A vertical scratch, the whole frame high, at column ``xs[j]`` in frame ``first + j``."""

    first: int
    xs: tuple[float, ...]
    width: float
    value: float
    opacity: float
    top: float  # opacity factor at the top row ...
    bottom: float  # ... and at the bottom row, linear between


@dataclass(frozen=True)
class FilmParams:
    """One clip's draw: everything ``apply_film`` needs except the noise."""

    kernel: torch.Tensor | None  # [k, k] HR blur kernel summing to 1; None: no blur
    resize_mode: str
    gain: torch.Tensor  # [N] contrast per frame
    offset: torch.Tensor  # [N] brightness per frame
    grain_sigma: float
    grain_size: float
    colour_noise: bool
    spots: tuple[Spot, ...]
    scratches: tuple[Scratch, ...]
    grey: bool
    codec: str | None  # "h264", "mpeg2"; None: no compression (8-bit rounding only)
    quality: int


# -- kernels ---------------------------------------------------------------------------------------
def gaussian_kernel(sigma_x: float, sigma_y: float, angle: float = 0.0) -> torch.Tensor:
    """An anisotropic Gaussian, axes ``sigma_x`` and ``sigma_y`` turned by ``angle``, out to 3 sigma."""
    radius = max(1, math.ceil(3 * max(sigma_x, sigma_y)))
    y, x = _grid(radius)
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * x + s * y, -s * x + c * y
    return _normalised(np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2)))


def defocus_kernel(radius: float) -> torch.Tensor:
    """A disc of ``radius`` pixels with an antialiased edge: an out-of-focus lens."""
    y, x = _grid(math.ceil(radius) + 1)
    return _normalised(np.clip(radius + 0.5 - np.hypot(x, y), 0, 1))


def motion_kernel(length: float, angle: float = 0.0) -> torch.Tensor:
    """A line ``length`` pixels long through the centre at ``angle``: the camera moving while exposed."""
    radius = math.ceil(length / 2) + 1
    t = np.linspace(-length / 2, length / 2, max(2, math.ceil(length * 8)))
    px, py = radius + t * math.cos(angle), radius + t * math.sin(angle)
    kernel = np.zeros((2 * radius + 1, 2 * radius + 1))
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - x0, py - y0
    for dy, dx, w in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(kernel, (y0 + dy, x0 + dx), w)  # bilinear splat of points along the line
    return _normalised(kernel)


def _grid(radius: int) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[-radius : radius + 1, -radius : radius + 1].astype(np.float64)


def _normalised(kernel: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(kernel / kernel.sum()).float()


# -- the steps -------------------------------------------------------------------------------------
def blur(frames: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` convolved per channel with ``kernel`` ``[k, k]``, edges replicated."""
    n, c, h, w = frames.shape
    r = kernel.shape[-1] // 2
    padded = F.pad(frames.reshape(n * c, 1, h, w), (r, r, r, r), mode="replicate")
    out = F.conv2d(padded, kernel.flip(0, 1).to(frames)[None, None])
    return out.view(n, c, h, w)


def resize(frames: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """``[N, C, H, W]`` to ``size`` by ``mode`` (bicubic and bilinear antialiased), clamped to [0, 1]."""
    if mode == "area":
        return F.interpolate(frames, size=size, mode="area")
    return F.interpolate(frames, size=size, mode=mode, antialias=True, align_corners=False).clamp(0, 1)


def flicker(frames: torch.Tensor, gain: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Frame i's contrast times ``gain[i]`` about mid-grey, plus ``offset[i]``: an uneven exposure."""
    gain = gain.to(frames).view(-1, 1, 1, 1)
    offset = offset.to(frames).view(-1, 1, 1, 1)
    return ((frames - 0.5) * gain + 0.5 + offset).clamp(0, 1)


def luma(frames: torch.Tensor) -> torch.Tensor:
    """BT.601 luma ``[N, 1, H, W]`` of RGB ``[N, 3, H, W]``."""
    weights = torch.tensor([0.299, 0.587, 0.114], device=frames.device, dtype=frames.dtype)
    return (frames * weights.view(1, 3, 1, 1)).sum(1, keepdim=True)


def grain_strength(level: torch.Tensor) -> torch.Tensor:
    """The noise std at luma ``level``, relative to mid-grey: a quarter at black and white, one at 0.5."""
    return 0.25 + 3 * level * (1 - level)


def add_grain(frames: torch.Tensor, sigma: float, size: float, colour: bool, rng: np.random.Generator) -> torch.Tensor:
    """Gaussian grain of std ``sigma * grain_strength(luma)``, a new field every frame, clumped by a
    Gaussian of ``size`` pixels (and scaled back to unit std); ``colour``: each channel its own."""
    n, _, h, w = frames.shape
    noise = torch.from_numpy(rng.standard_normal((n, 3 if colour else 1, h, w), dtype=np.float32))
    if size > 0:
        kernel = gaussian_kernel(size, size)
        noise = blur(noise, kernel) / kernel.square().sum().sqrt()  # unit std again for white noise
    noise = noise.to(frames)
    return (frames + sigma * grain_strength(luma(frames)) * noise).clamp(0, 1)


def add_dust(frames: torch.Tensor, spots: Sequence[Spot]) -> torch.Tensor:
    """``frames`` with each spot blended in over its frames."""
    out = frames.clone()
    _, _, h, w = frames.shape
    y, x = torch.meshgrid(
        torch.arange(h, device=frames.device, dtype=frames.dtype),
        torch.arange(w, device=frames.device, dtype=frames.dtype),
        indexing="ij",
    )
    for spot in spots:
        c, s = math.cos(spot.angle), math.sin(spot.angle)
        u, v = c * (x - spot.x) + s * (y - spot.y), -s * (x - spot.x) + c * (y - spot.y)
        distance = torch.sqrt(u**2 + (v / spot.aspect) ** 2)
        alpha = spot.opacity * (spot.radius + 0.5 - distance).clamp(0, 1)
        frames_of = slice(spot.first, spot.first + spot.frames)
        out[frames_of] = out[frames_of] * (1 - alpha) + spot.value * alpha
    return out


def add_scratches(frames: torch.Tensor, scratches: Sequence[Scratch]) -> torch.Tensor:
    """``frames`` with each scratch blended in, one column position per frame."""
    out = frames.clone()
    _, _, h, w = frames.shape
    cols = torch.arange(w, device=frames.device, dtype=frames.dtype)
    for scratch in scratches:
        along = torch.linspace(scratch.top, scratch.bottom, h, device=frames.device, dtype=frames.dtype)
        for j, centre in enumerate(scratch.xs):
            across = (scratch.width / 2 + 0.5 - (cols - centre).abs()).clamp(0, 1)
            alpha = scratch.opacity * along[:, None] * across[None, :]
            i = scratch.first + j
            out[i] = out[i] * (1 - alpha) + scratch.value * alpha
    return out


def to_grey(frames: torch.Tensor) -> torch.Tensor:
    """BT.601 luma in all three channels: black-and-white film."""
    return luma(frames).expand(-1, 3, -1, -1).contiguous()


def compress(frames: np.ndarray, codec: str, quality: int) -> np.ndarray:
    """``[N, H, W, 3]`` uint8 through a real encode and decode in memory: H.264 (libx264 at CRF
    ``quality``) or MPEG-2 (fixed quantiser ``quality``), 4:2:0, one thread (deterministic).
    Odd sizes are padded by their edge for 4:2:0 and cropped back."""
    n, h, w, _ = frames.shape
    padded = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4" if codec == "h264" else "mpeg") as container:
        stream = container.add_stream("libx264" if codec == "h264" else "mpeg2video", rate=25)
        stream.width, stream.height, stream.pix_fmt = padded.shape[2], padded.shape[1], "yuv420p"
        stream.thread_count = 1
        if codec == "h264":
            stream.options = {"crf": str(quality), "preset": "veryfast", "threads": "1"}
        else:
            stream.codec_context.qmin = stream.codec_context.qmax = quality
        for frame in padded:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    buffer.seek(0)
    with av.open(buffer, "r") as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if len(decoded) != n:  # never seen; a silent mismatch would shift the input in time
        raise RuntimeError(f"{codec} round trip gave {len(decoded)} frames for {n}")
    return np.stack(decoded)[:, :h, :w]


# -- drawing and applying --------------------------------------------------------------------------
def draw_params(
    rng: np.random.Generator, frames: int, height: int, width: int, settings: FilmSettings = FILM
) -> FilmParams:
    """One clip's parameters for ``frames`` LR frames of ``height`` x ``width``, drawn from ``settings``."""
    s = settings
    kernel = None
    if rng.random() < s.blur_p:
        kind = s.blur_kinds[rng.integers(len(s.blur_kinds))]
        if kind == "gaussian":
            kernel = gaussian_kernel(*rng.uniform(*s.gaussian_sigma, 2), rng.uniform(0, math.pi))
        elif kind == "defocus":
            kernel = defocus_kernel(rng.uniform(*s.defocus_radius))
        else:
            kernel = motion_kernel(rng.uniform(*s.motion_length), rng.uniform(0, math.pi))
    resize_mode = s.resize_modes[rng.integers(len(s.resize_modes))]
    brightness, contrast = rng.uniform(*s.flicker_brightness), rng.uniform(*s.flicker_contrast)
    offset = torch.from_numpy(rng.uniform(-brightness, brightness, frames)).float()
    gain = torch.from_numpy(1 + rng.uniform(-contrast, contrast, frames)).float()
    grain = rng.uniform(*s.grain_sigma), rng.uniform(*s.grain_size), bool(rng.random() < s.colour_noise_p)
    spots, scratches = [], []
    dust_rate, scratch_rate = rng.uniform(*s.dust_rate), rng.uniform(*s.scratch_rate)
    for first in range(frames):
        for _ in range(rng.poisson(dust_rate)):
            spots.append(
                Spot(
                    first=first,
                    frames=2 if rng.random() < s.dust_two_frames_p and first + 1 < frames else 1,
                    y=rng.uniform(0, height),
                    x=rng.uniform(0, width),
                    radius=rng.uniform(*s.dust_radius),
                    aspect=rng.uniform(0.4, 1.0),
                    angle=rng.uniform(0, math.pi),
                    value=_dark_or_bright(rng),
                    opacity=rng.uniform(*s.dust_opacity),
                )
            )
        for _ in range(rng.poisson(scratch_rate)):
            length = min(int(rng.integers(s.scratch_frames[0], s.scratch_frames[1] + 1)), frames - first)
            steps = np.concatenate([[0.0], rng.normal(0, s.scratch_drift, length - 1)])
            xs = rng.uniform(0, width) + np.cumsum(steps)
            scratches.append(
                Scratch(
                    first=first,
                    xs=tuple(float(x) for x in xs),
                    width=rng.uniform(*s.scratch_width),
                    value=_dark_or_bright(rng),
                    opacity=rng.uniform(*s.scratch_opacity),
                    top=rng.uniform(0.5, 1.0),
                    bottom=rng.uniform(0.5, 1.0),
                )
            )
    grey = bool(rng.random() < s.grey_p)
    codec = s.codecs[rng.integers(len(s.codecs))] if s.codecs else None
    low, high = s.h264_crf if codec == "h264" else s.mpeg2_q
    return FilmParams(
        kernel, resize_mode, gain, offset, *grain, tuple(spots), tuple(scratches), grey, codec,
        int(rng.integers(low, high + 1)),
    )  # fmt: skip


def _dark_or_bright(rng: np.random.Generator) -> float:
    return float(rng.uniform(0.0, 0.15) if rng.random() < 0.5 else rng.uniform(0.85, 1.0))


def apply_film(frames: torch.Tensor, scale: int, params: FilmParams, rng: np.random.Generator) -> torch.Tensor:
    """HR frames ``[N, 3, H, W]`` (float in [0, 1], or uint8) to their film input ``[N, 3, H/s, W/s]``,
    float at 8-bit levels on the frames' device. Blur and downscale go a few frames at a time, so a
    long clip never needs a float copy of all its HR frames; ``frames`` itself is never written."""
    h, w = frames.shape[-2] // scale, frames.shape[-1] // scale
    small = []
    for chunk in frames.split(4):
        chunk = chunk.float() / 255 if chunk.dtype == torch.uint8 else chunk.float()
        if params.kernel is not None:
            chunk = blur(chunk, params.kernel)
        small.append(resize(chunk, (h, w), params.resize_mode))
    out = flicker(torch.cat(small), params.gain, params.offset)
    out = add_grain(out, params.grain_sigma, params.grain_size, params.colour_noise, rng)
    out = add_scratches(add_dust(out, params.spots), params.scratches)
    if params.grey:
        out = to_grey(out)
    levels = (out * 255).round().clamp(0, 255).to(torch.uint8)
    if params.codec is not None:
        array = compress(levels.permute(0, 2, 3, 1).cpu().numpy(), params.codec, params.quality)
        levels = torch.from_numpy(array).permute(0, 3, 1, 2).to(frames.device)
    return levels.float() / 255


def seeds_of(seed: int | Sequence[int]) -> list[int]:
    """A seed or a tuple of them as a list of ints."""
    return [int(seed)] if np.ndim(seed) == 0 else [int(x) for x in seed]


def generator(seed: int | Sequence[int]) -> np.random.Generator:
    """A numpy generator from a seed or a tuple of them (negative ones allowed: numpy's are not)."""
    return np.random.default_rng([x % 2**64 for x in seeds_of(seed)])


def film_clip(
    frames: torch.Tensor, fps_x: int, scale: int, rng: np.random.Generator, settings: FilmSettings = FILM
) -> torch.Tensor:
    """One clip's ground truth ``[L, 3, H, W]`` to its film input ``[(L-1)//fps_x + 1, 3, H/s, W/s]``:
    frames 0, k, 2k, ... as in the standard protocol, parameters drawn from ``rng``."""
    kept = frames[::fps_x]
    params = draw_params(rng, kept.shape[0], kept.shape[-2] // scale, kept.shape[-1] // scale, settings)
    return apply_film(kept, scale, params, rng)


def film_degrade(
    frames: torch.Tensor, fps_x: int, scale: int, seed: int | Sequence[int], settings: FilmSettings = FILM
) -> torch.Tensor:
    """``film_clip`` on ``[..., L, 3, H, W]``: sample i of the leading dimensions draws its own
    parameters from ``generator((*seed, i))``."""
    seeds = seeds_of(seed)
    lead = frames.shape[:-4]
    flat = frames.reshape(-1, *frames.shape[-4:])
    out = [film_clip(clip, fps_x, scale, generator([*seeds, i]), settings) for i, clip in enumerate(flat)]
    return torch.stack(out).view(*lead, *out[0].shape)
