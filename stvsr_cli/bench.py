"""``stvsr bench``: how fast a model runs here, alone and end to end, and how much memory it takes.

Weights are random (speed does not depend on them, and nothing needs downloading). Model-only
throughput times whole pipeline windows after a warm-up call, with CUDA synchronised; end-to-end
throughput runs ``upscale`` (decode -> model -> encode) on a synthetic clip.

Two model-only rates: every frame a call makes (``model_fps``), and the frames of a call that reach
the file in a long run (``model_useful_fps``: the window minus its overlap with the next one, times
the time factor), which is what a user gets. ``plain`` is the baseline every speed-up is measured
against in the same run: float32, frames from pageable memory, encoding in the calling thread.
"""

from __future__ import annotations

import resource
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from pathlib import Path
from time import perf_counter  # the matrix-product rate, on the real clock whatever times the rest

import av
import numpy as np
import torch
from safetensors.torch import save_file

from stvsr_cli.api import UpscaleResult, on_arrays, upscale
from stvsr_cli.errors import UsageError
from stvsr_cli.io.encode import EncodeSettings, choose_codec
from stvsr_cli.models.loader import load_model
from stvsr_cli.models.registry import ModelSpec, Registry, load_registry
from stvsr_cli.models.speed import Speed
from stvsr_cli.options import UpscaleOptions
from stvsr_cli.pipeline.classic_frames import ClassicFrames
from stvsr_cli.pipeline.stages import StageClock


@dataclass(frozen=True)
class BenchResult:
    model: str
    device: str
    device_name: str
    precision: str
    plain: bool  # the baseline: fp32, pageable host memory, encoding in the calling thread
    width: int
    height: int
    out_width: int
    out_height: int
    window: int
    overlap: int
    model_seconds_per_call: float
    model_fps: float  # output frames per second, model only: every frame of a call
    model_useful_fps: float  # output frames per second that reach the file (overlap outputs not counted)
    model_mpix_s: float  # output megapixels per second, model only, every frame
    model_useful_mpix_s: float
    flops_per_call: float | None  # torch FLOP counter over one call (deformable sampling is not counted)
    tflop_s: float | None  # flops_per_call / seconds per call
    flops_per_useful_frame: float | None  # a call's FLOPs over the frames of it that reach the file
    peak_tflop_s: float  # this device's dense matrix-product rate, measured here (bf16 on CUDA, fp32 on the CPU)
    limit_useful_fps: float | None  # the arithmetic limit: peak rate / FLOPs per useful frame
    percent_of_limit: float | None  # model_useful_fps as a share of that limit
    channels_last: bool
    compile_mode: str | None  # torch.compile's mode, None when not compiled
    batch_windows: int  # windows per model call
    deform_conv: str | None  # the deformable convolution's implementation (None: the model has none)
    copy_stream: bool  # end to end: copies to and from the GPU on their own stream, beside the model
    device_colour: bool  # end to end: the encoder's YUV made on the model's device
    compile_seconds: float  # the warm-up call, which compiles when compiling
    codec: str  # the encoder of the end-to-end run
    e2e_frames: int
    e2e_seconds: float
    e2e_fps: float
    # Seconds per stage of the end-to-end run, summed over its threads (decode and to RGB in the
    # decoder's, to YUV and encode in the encoder's: they overlap the model's); on CUDA a second
    # run, each upload, model and download synchronised to be counted where it belongs (the
    # first, which e2e_fps is from, runs without: syncs would stop copies overlapping the model).
    stage_seconds: dict[str, float]
    peak_memory_gib: float
    memory: str  # what the peak measures
    random_weights: bool  # the model has weights, replaced by random ones here

    def to_json(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def synthetic_clip(path: Path, frames: int, width: int, height: int, rate: int = 25) -> None:
    """A moving pattern (H.264, yuv420p): cheap to make, not trivial to encode."""
    y, x = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width - width % 2, height - height % 2, "yuv420p"
        for i in range(frames):
            rgb = np.stack([(x * 3 + i * 4) % 256, (y * 2 + i * 3) % 256, ((x + y) + i * 5) % 256], axis=-1).astype(
                np.uint8
            )[: stream.height, : stream.width]
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _peak_memory(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30, "GPU allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process RSS"


def bench(
    model: str | None = None,
    *,
    size: tuple[int, int] = (480, 270),
    frames: int = 24,
    device: str = "auto",
    half: bool | None = None,
    calls: int = 3,
    codec: str | None = None,
    plain: bool = False,
    registry: Registry | None = None,
    speed: Speed | None = None,
    device_colour: bool | None = None,
    stage_times: bool = True,
) -> BenchResult:
    """Time ``model`` (random weights) alone on a window of ``size`` frames and end to end on a
    synthetic clip of ``frames`` frames. ``codec`` forces the encoder (default: what ``upscale``
    chooses, NVENC on CUDA where it opens); ``plain`` runs the baseline (float32, no pinned memory,
    no encoder thread, no copy stream, colour converted by swscale). ``speed`` switches the
    speed-ups (``models.speed``) for both measurements; with ``batch_windows`` the model-only call
    runs that many windows at once. ``device_colour`` as ``upscale``'s (end to end). On CUDA,
    ``stage_times`` adds a second end-to-end run with each stage synchronised and timed."""
    speed = speed or Speed()
    if plain:
        if half:
            raise UsageError("--plain is the float32 baseline", "drop --half")
        if speed.compile_mode or speed.batch_windows > 1 or speed.copy_stream or device_colour:
            raise UsageError(
                "--plain is the baseline: one window a call, not compiled, copies and colour on the host",
                "drop the speed options",
            )
        half = False
    registry = registry or load_registry()
    registered = registry.get(model)
    spec: ModelSpec = replace(registered, weights=None)  # random weights: nothing to fetch
    scale = 4 if spec.scales is None else spec.scales[0]
    fps_x = 2 if spec.fps_x is None else spec.fps_x[0]
    width, height = size
    torch.manual_seed(0)
    upscaler = load_model(spec, scale=scale, device=device, half=half, speed=speed, random_weights=True)
    dev = upscaler.device
    peak_rate = matmul_tflop_s(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    windows = torch.rand(speed.batch_windows, spec.window, 3, height, width, device=dev)
    run_options = UpscaleOptions(
        model=spec.name, scale=scale, fps_x=fps_x, device=str(dev), half=upscaler.half, pipelined=not plain,
        device_colour=device_colour, speed=speed, overwrite=True,
    )  # fmt: skip
    # What upscale runs: classic on the CPU works on uint8 arrays (FFmpeg's scaler), not tensors.
    arrays = on_arrays(spec, run_options)
    lr_arrays = list((windows[0].permute(0, 2, 3, 1) * 255).round().to(torch.uint8).cpu().numpy())
    per_window = fps_x * (spec.window - 1) + 1  # output frames of one call on one window
    times = [Fraction(i, fps_x) for i in range(per_window)]

    def call() -> None:
        if arrays:  # fresh arrays each call: the runner keeps the last window's upscaled frames
            ClassicFrames(scale).frames_at([frame.copy() for frame in lr_arrays], times)
        elif speed.batch_windows > 1:
            upscaler.batch(windows, fps_x)
        else:
            upscaler(windows[0], fps_x)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    began = time.perf_counter()
    call()  # warm-up: cuDNN autotuning, allocator, lazy initialisation, compiling
    compile_seconds = time.perf_counter() - began
    flops = None if speed.compile_mode else _count_flops(call)  # the counter cannot see into compiled code
    began = time.perf_counter()
    for _ in range(calls):
        call()
    per_call = (time.perf_counter() - began) / calls
    outputs = speed.batch_windows * per_window
    useful = speed.batch_windows * fps_x * (spec.window - spec.overlap)  # in a long run, the next window makes the rest
    per_useful = flops / useful if flops else None
    limit = peak_rate * 1e12 / per_useful if per_useful else None
    settings = choose_codec(EncodeSettings(codec=codec), dev.type)

    cuda = dev.type == "cuda"
    stages = StageClock(sync=(lambda: torch.cuda.synchronize(dev)) if cuda else None)
    with tempfile.TemporaryDirectory(prefix="stvsr-bench-") as tmp:
        clip = Path(tmp) / "clip.mp4"
        synthetic_clip(clip, frames, width, height)
        if spec.architecture.learned:  # the same random weights end to end, as a file upscale loads
            save_file(upscaler.module.state_dict(), str(Path(tmp) / "random.safetensors"))
            spec = replace(
                spec, weights=str(Path(tmp) / "random.safetensors"), sha256=None, git_blob_sha1=None, format="safetensors"
            )

        def run(clock: StageClock | None) -> UpscaleResult:
            return upscale(
                clip, Path(tmp) / "out.mp4", run_options, encode=settings,
                registry=Registry(models={spec.name: spec}, default=spec.name), stage_clock=clock,
            )  # fmt: skip

        result = run(None if cuda else stages)  # on the CPU the clock syncs nothing: one run does both
        if cuda and stage_times:
            run(stages)
    peak, memory = _peak_memory(dev)
    return BenchResult(
        model=spec.name,
        device=str(dev),
        device_name=device_name(dev),
        precision="fp16 autocast" if upscaler.half else "fp32",
        plain=plain,
        width=width,
        height=height,
        out_width=width * scale,
        out_height=height * scale,
        window=spec.window,
        overlap=spec.overlap,
        model_seconds_per_call=per_call,
        model_fps=outputs / per_call,
        model_useful_fps=useful / per_call,
        model_mpix_s=outputs * width * height * scale * scale / per_call / 1e6,
        model_useful_mpix_s=useful * width * height * scale * scale / per_call / 1e6,
        flops_per_call=flops,
        tflop_s=flops / per_call / 1e12 if flops else None,
        flops_per_useful_frame=per_useful,
        peak_tflop_s=peak_rate,
        limit_useful_fps=limit,
        percent_of_limit=100 * (useful / per_call) / limit if limit else None,
        channels_last=speed.uses_channels_last(dev.type),
        compile_mode=speed.compile_mode,
        batch_windows=speed.batch_windows,
        deform_conv=_deform_conv_name(upscaler.module),
        copy_stream=run_options.uses_copy_stream(dev.type),
        device_colour=run_options.uses_device_colour(dev.type),
        compile_seconds=compile_seconds,
        codec=settings.codec or "libx264",
        e2e_frames=result.frames_out,
        e2e_seconds=result.seconds,
        e2e_fps=result.fps,
        stage_seconds=stages.table(),
        peak_memory_gib=peak,
        memory=memory,
        random_weights=registered.weights is not None,
    )


def _deform_conv_name(module: torch.nn.Module) -> str | None:
    impl = next((m.deform_conv for m in module.modules() if hasattr(type(m), "deform_conv")), None)
    return None if impl is None else impl.__name__


def matmul_tflop_s(device: torch.device, seconds: float = 0.5) -> float:
    """The device's dense matrix-product rate, measured: bf16 on CUDA (what fp16/bf16 networks can
    reach at best), fp32 on the CPU."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a = torch.rand(n, n, device=device, dtype=dtype)
    b = torch.rand(n, n, device=device, dtype=dtype)
    a @ b  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    count, began = 0, perf_counter()
    while perf_counter() - began < seconds:
        a @ b
        count += 1
        if device.type == "cuda" and count % 8 == 0:
            torch.cuda.synchronize(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 2 * n**3 * count / (perf_counter() - began) / 1e12


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def _count_flops(call) -> float | None:
    """FLOPs of one call by torch's counter (matrix products and convolutions; None where it fails)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            call()
        return float(counter.get_total_flops())
    except Exception:  # a counter that cannot trace some op must not cost the measurement
        return None
