"""``UpscaleOptions``: how to upscale a file, one checked value shared by ``upscale``, ``stvsr batch``,
the command line and the resume manifest, so that an option is named, defaulted and checked once."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from stvsr_cli import __version__
from stvsr_cli.errors import UsageError
from stvsr_cli.io.encode import EncodeSettings
from stvsr_cli.io.filters import DENOISE_LEVELS
from stvsr_cli.io.timing import nominal_rate
from stvsr_cli.io.workdir import input_identity
from stvsr_cli.models.speed import Speed
from stvsr_cli.pipeline.memory import parse_size
from stvsr_cli.pipeline.repeats import DEDUP_MODES
from stvsr_cli.pipeline.scenes import DEFAULT_SCENE_THRESHOLD
from stvsr_cli.pipeline.tiles import MIN_TILE

DEINTERLACE_MODES = ("auto", "on", "off")
IVTC_MODES = ("auto", "on", "off")
GRAIN_MODES = ("off", "keep")
# The encoder's planes made on a CUDA device by default? Off until the GPU campaign has measured it.
DEVICE_COLOUR_ON_CUDA = False
DEFAULT_SEGMENT_FRAMES = 480  # output frames per resumable segment (closed at the next window boundary)

# Options that change how a run goes but not a byte of its output: a resumed run may change them.
_RUN_ONLY = ("offline", "overwrite", "restart", "pipelined", "speed")


@dataclass(frozen=True)
class UpscaleOptions:
    """Everything that says how to upscale one file; checked when made (``UsageError``).

    ``fps`` (a number or a fraction such as "60000/1001") asks for that output frame rate instead
    of the factor ``fps_x``. ``tile`` is in LR pixels, 0 for off. ``start``/``duration`` are
    seconds. ``pipelined=False`` is the plain baseline ``stvsr bench --plain`` measures: frames
    copied to the GPU from pageable memory, converted to YUV by swscale and encoded in the model's
    thread. ``device_colour``: RGB to the encoder's YUV on the model's device (only the planes come
    back; None: ``DEVICE_COLOUR_ON_CUDA`` on CUDA, off in the plain baseline).
    """

    model: str | None = None  # None: the registry's default
    scale: int = 4
    fps_x: int = 2
    fps: Fraction | None = None
    window: int | None = None  # None: the model's own
    overlap: int | None = None
    tile: int = 0
    max_memory: int | str | None = None  # bytes (or "4G"); None: a share of the memory free at start
    device: str = "auto"
    half: bool | None = None  # None: float16 on CUDA where the model allows it
    device_colour: bool | None = None  # the encoder's planes made on the device (pipeline.planes); see below
    weights: Path | None = None  # a local weights file instead of the registered one
    offline: bool | None = None  # None: HF_HUB_OFFLINE decides
    encode: EncodeSettings = field(default_factory=EncodeSettings)
    start: Fraction | float | None = None
    duration: Fraction | float | None = None
    scene_detect: bool = True
    scene_threshold: float = DEFAULT_SCENE_THRESHOLD
    deinterlace: str = "auto"
    ivtc: str = "auto"  # undo hard telecine: on, off, or auto (an interlaced stream whose first seconds show 3:2)
    deflicker: bool = False  # FFmpeg's deflicker before the model
    denoise: str = "off"  # FFmpeg's denoiser before the model: off, light, medium, strong
    grain: str = "off"  # keep: grain of the input's measured strength added back after the model
    dedup: str = "auto"  # drop frames that repeat the previous one: on, off, or auto (when they repeat regularly)
    segment_frames: int = DEFAULT_SEGMENT_FRAMES
    overwrite: bool = False
    restart: bool = False  # discard what an interrupted run of the same output left
    pipelined: bool = True
    speed: Speed = field(default_factory=Speed)  # how the network runs (layout, compiling, batches), not what

    def __post_init__(self) -> None:
        if self.fps is not None:
            object.__setattr__(self, "fps", parse_rate(self.fps))
        if self.weights is not None:
            object.__setattr__(self, "weights", Path(self.weights))
        if self.start is not None and self.start < 0:
            raise UsageError("--start must not be negative")
        if self.duration is not None and self.duration <= 0:
            raise UsageError("--duration must be positive")
        if self.max_memory is not None:
            object.__setattr__(self, "max_memory", parse_size(self.max_memory))
        if self.tile and self.tile < MIN_TILE:
            raise UsageError(f"--tile must be 0 (off) or at least {MIN_TILE} pixels")
        if self.deinterlace not in DEINTERLACE_MODES:
            raise UsageError(f"--deinterlace must be one of {', '.join(DEINTERLACE_MODES)}")
        if self.ivtc not in IVTC_MODES:
            raise UsageError(f"--ivtc must be one of {', '.join(IVTC_MODES)}")
        if self.denoise not in DENOISE_LEVELS:
            raise UsageError(f"--denoise must be one of {', '.join(DENOISE_LEVELS)}")
        if self.grain not in GRAIN_MODES:
            raise UsageError(f"--grain must be one of {', '.join(GRAIN_MODES)}")
        if self.dedup not in DEDUP_MODES:
            raise UsageError(f"--dedup must be one of {', '.join(DEDUP_MODES)}")
        if self.scene_threshold <= 0:
            raise UsageError("--scene-threshold must be positive")
        if self.segment_frames < 1:
            raise UsageError("--segment-frames must be at least 1")

    def without_effect_on_arrays(self) -> list[str]:
        """The options given that size or speed up a network, which a run on the decoded arrays
        (classic on the CPU: no network, no float frames) does not have."""
        speed = self.speed
        given = {
            "--tile": self.tile, "--max-memory": self.max_memory is not None, "--compile": speed.compile,
            "--channels-last": speed.channels_last, "--batch-windows": speed.batch_windows > 1,
            "--deform-conv": speed.deform_conv != "auto",
        }  # fmt: skip
        return [flag for flag, on in given.items() if on]

    def uses_copy_stream(self, device_type: str) -> bool:
        """Copies on their own CUDA streams: as ``speed`` says, never in the plain baseline."""
        return self.speed.uses_copy_stream(device_type) and self.pipelined

    def uses_device_colour(self, device_type: str) -> bool:
        if self.device_colour is not None:
            return self.device_colour
        return device_type == "cuda" and DEVICE_COLOUR_ON_CUDA and self.pipelined

    def manifest(
        self, *, model: str, window: int, overlap: int, encode: EncodeSettings, device_colour: bool = False
    ) -> dict[str, Any]:
        """What the work folder records to tell a resumable run: the options as resolved for the run
        (model, window, encoder and colour conversion chosen) that shape the output, the weights
        file by identity."""
        resolved = replace(
            self, model=model, window=window, overlap=overlap, encode=encode, device_colour=device_colour
        )
        record = {k: v for k, v in asdict(resolved).items() if k not in _RUN_ONLY}
        record["weights"] = input_identity(self.weights) if self.weights else None
        return {"stvsr": __version__, **record}


def parse_rate(value: Fraction | float | str) -> Fraction:
    """A frame rate: 60, 59.94 (read as 60000/1001), or a fraction such as "60000/1001"."""
    try:
        rate = Fraction(str(value).strip()) if not isinstance(value, Fraction) else value
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"--fps '{value}' is not a frame rate such as 60 or 60000/1001") from None
    if rate <= 0 or rate > 10_000:
        raise UsageError(f"--fps {value} is not a frame rate between 0 and 10000")
    return nominal_rate(rate) if rate.denominator in (1, 10, 100, 1000) else rate
