"""The training loop: Charbonnier loss, AdamW with warm-up and cosine decay, gradient clipping,
mixed precision on CUDA, checkpoints that resume exactly, validation with the eval protocol."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from stvsr_cli import hub
from stvsr_cli.errors import StvsrError, UsageError
from stvsr_cli.evaluation import find_clips, read_clip, score_clip
from stvsr_cli.models.loader import Upscaler, resolve_device
from stvsr_cli.models.ops.dcn import pick_deform_conv, use_deform_conv
from stvsr_cli.models.registry import ARCHITECTURES, ModelSpec, architecture, load_registry
from stvsr_cli.training.data import FrameCache, PatchSampler, Prefetcher
from stvsr_cli.training.licences import clip_source

CHECKPOINTS = "checkpoints"
LATEST = "latest.pt"


class TrainingError(StvsrError):
    pass


@dataclass
class TrainConfig:
    arch: str | None
    params: dict
    data: list[str]
    out: str
    name: str
    steps: int = 10_000
    batch: int = 8
    patch: int = 128
    lr: float = 4e-4
    frames_in: int = 4
    fps_x: int = 2
    scale: int = 4
    device: str = "auto"
    amp: str | None = None  # bf16 | fp16 | none; None = bf16 on CUDA where supported, else none
    seed: int = 0
    save_every: int = 500
    log_every: int = 10
    val: list[str] = field(default_factory=list)
    val_every: int = 500
    val_clips: int = 3
    warmup: int | None = None
    clip_grad: float = 1.0
    init: str | None = None
    cache_dir: str | None = None
    degradation: str = "standard"  # how the input is made from the target (evaluation.DEGRADATIONS)
    time_budget: float | None = None  # seconds from the Trainer's creation: ``steps`` is then set to fit

    def spec(self) -> ModelSpec:
        """The model being trained, as a registry entry: validation, the final evaluation and the
        exported registry entry all run it this way (windows as long as the training samples)."""
        window = max(self.frames_in, 2)
        arch = ARCHITECTURES.get(self.arch or "")
        any_time = arch is not None and arch.arbitrary_times
        return ModelSpec(
            name=self.name,
            arch=self.arch or "",
            params=self.params,
            scales=(self.scale,),
            fps_x=None if any_time else (arch.time_factors if arch is not None else None) or (self.fps_x,),
            arbitrary_times=any_time,
            window=window,
            overlap=max(1, window // 2),
            min_frames=window if arch is not None and arch.window_param in self.params else 2,  # sized for its window
        )


@dataclass(frozen=True)
class StepLog:
    step: int
    steps: int
    loss: float
    lr: float
    seconds: float  # wall time of the run so far, resumed runs included
    val_psnr: float | None = None


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 1 % of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def stage_starts(steps: int, stage_ends: tuple[float, ...]) -> list[int]:
    """The first step of each stage of a staged schedule: the first step whose progress
    (``step / steps``, what ``training_loss`` is given) reaches each of ``stage_ends``."""
    starts = [0]
    for end in stage_ends:
        first = math.ceil(end * steps)
        while first > 0 and (first - 1) / steps >= end:
            first -= 1
        while first / steps < end:
            first += 1
        starts.append(min(first, steps))
    return starts


def staged_lr_factor(step: int, steps: int, warmup: int, stage_ends: tuple[float, ...] = ()) -> float:
    """``lr_factor`` started afresh in each stage (a stage trains modules that were idle before),
    the warm-up shortened to a tenth of a short stage."""
    starts = stage_starts(steps, stage_ends) + [steps]
    i = max(k for k in range(len(starts) - 1) if starts[k] <= step) if step < steps else len(starts) - 2
    length = max(1, starts[i + 1] - starts[i])
    return lr_factor(step - starts[i], length, max(1, min(warmup, length // 10)) if stage_ends else warmup)


def _amp_dtype(amp: str | None, device: torch.device) -> torch.dtype | None:
    if amp is None:
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return None
    if amp == "none":
        return None
    if amp == "fp16" and device.type != "cuda":
        raise UsageError("--amp fp16 needs a CUDA device", "use --amp bf16 or none on the CPU")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def cpu_autocast_is_fast(dtype: torch.dtype) -> bool:
    """Whether this CPU runs ``dtype`` convolutions about as fast as float32 (torch's kernels for it).

    Measured 2026-12-07 on a 2-core AMD EPYC (Zen 5: AVX-512 with AVX512_BF16, no AVX512_FP16 or AMX;
    torch 2.14.1, oneDNN 3.12), a 64-channel 3x3 convolution on 96x96, narrower CPUs simulated with
    ONEDNN_MAX_CPU_ISA (and ATEN_CPU_CAPABILITY): bfloat16 takes 1.5-1.8x float32's time wherever
    torch reports AVX512 (with AVX512_BF16 or without), 15-50x with AVX2 only; float16 15-50x even
    with AVX-512 (the range: the machine busy or idle). oneDNN's fast float16 needs AVX512_FP16 or
    AMX-FP16 (not measured here)."""
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return False
    if dtype == torch.bfloat16:
        return True
    features = torch.cpu.get_capabilities()
    return dtype == torch.float16 and bool(features.get("avx512_fp16") or features.get("amx_fp16"))


def amp_slowdown_note(amp: torch.dtype | None, device: torch.device) -> str | None:
    """One line for ``stvsr train`` when the mixed precision asked for is far slower than float32 here."""
    if amp is None or device.type != "cpu" or cpu_autocast_is_fast(amp):
        return None
    flag, dtype = {torch.bfloat16: ("bf16", "bfloat16"), torch.float16: ("fp16", "float16")}[amp]
    return (
        f"--amp {flag} will be far slower than float32 on this CPU ({torch.backends.cpu.get_cpu_capability()}: "
        f"no fast {dtype} convolutions); --amp none trains faster here"
    )


@dataclass(frozen=True)
class InitWeights:
    """The weights a run starts from (``--init``)."""

    label: str  # the model's name or the file's
    arch: str
    params: dict
    state: Mapping[str, torch.Tensor]
    lineage: tuple[str, ...]


def read_init(init: str) -> InitWeights:
    """``--init``: a registered model, or a file: a checkpoint of ``stvsr train`` (``.pt``, e.g. one
    brought back from a GPU run) or weights it exported (``.safetensors``). Weights whose lineage
    is not recorded are counted as research-only (``licences``), as every model shipped before
    lineages were is."""
    path = Path(init)
    if path.suffix in (".pt", ".safetensors") or path.is_file():
        if not path.is_file():
            raise UsageError(f"--init {init}: no such file")
        if hub.is_pytorch_checkpoint(path):
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                saved = json.loads(state["config"])
                arch, params, model = saved["arch"], saved["params"], state["model"]
            except (KeyError, TypeError, ValueError, RuntimeError, OSError):
                raise UsageError(f"--init {init}: not a checkpoint of stvsr train") from None
            return InitWeights(path.name, arch, params, model, tuple(state.get("lineage") or (f"weights:{path.name}",)))
        found = hub.read_architecture(path)
        if found is None:
            raise UsageError(f"--init {init}: no architecture recorded in it", "give weights that stvsr train exported")
        lineage = hub.read_lineage(path) or (f"weights:{path.name}",)
        return InitWeights(path.name, *found, hub.read_state_dict(path), lineage)
    spec = load_registry().get(init)
    if spec.weights is None:
        raise UsageError(f"model '{init}' has no weights to start from")
    path = hub.weights_file(spec)
    lineage = hub.read_lineage(path) or (f"weights:{spec.name}",)
    return InitWeights(spec.name, spec.arch, dict(spec.params), hub.read_state_dict(path), lineage)


class Trainer:
    def __init__(self, config: TrainConfig, *, resume: bool = False) -> None:
        self.config = config
        self.out = Path(config.out)
        self.device = resolve_device(config.device)
        self.amp = _amp_dtype(config.amp, self.device)
        self._created = time.monotonic()
        self._most_steps = config.steps
        self._init = read_init(config.init) if config.init else None
        # The sources of every clip that trained these weights, those of the weights it starts from
        # first: what licence the weights can carry (``licences.weights_licence``).
        self.lineage: tuple[str, ...] = self._init.lineage if self._init else ()
        self._resolve_arch()
        if config.arch not in ARCHITECTURES:
            raise UsageError(f"unknown arch '{config.arch}'", "known: " + ", ".join(sorted(ARCHITECTURES)))
        cls = architecture(ModelSpec(name="", arch=config.arch))
        if cls.window_param and cls.window_param not in config.params:
            config.params = {**config.params, cls.window_param: config.frames_in}  # sized for the training window
        self.time_factors = cls.training_time_factors()
        torch.manual_seed(config.seed)  # the same initial weights for the same seed
        try:
            self.model = architecture(config.spec())(**config.params)
        except TypeError as exc:
            raise UsageError(f"bad --params for arch '{config.arch}': {exc}") from None
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        if not self.parameters:
            raise UsageError(f"arch '{config.arch}' has nothing to train")
        if self._init:
            self._load_init(self._init)
        self.model.to(self.device)
        use_deform_conv(self.model, pick_deform_conv(self.device))
        self.optimizer = torch.optim.AdamW(self.parameters, lr=config.lr, betas=(0.9, 0.99), weight_decay=0.0)
        stage_ends = self.model.stage_ends  # a staged schedule restarts the lr per stage
        self.warmup = self._warmup(config.steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: staged_lr_factor(step, config.steps, self.warmup, stage_ends)
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.step = 0
        self.elapsed = 0.0
        if resume:
            self._resume()
        elif (self.out / CHECKPOINTS / LATEST).exists():
            raise UsageError(
                f"{self.out} already holds a training run", "use --resume to continue it, or another --out"
            )

    # -- setup ----------------------------------------------------------------------------------
    def _warmup(self, steps: int) -> int:
        return self.config.warmup if self.config.warmup is not None else min(500, max(1, steps // 20))

    def fit_steps_to_budget(self, steps_timed: int, seconds_timed: float) -> int:
        """With ``time_budget``: the step count whose schedule ends inside it, from the rate of the
        last ``steps_timed`` steps (taken early in the warm-up, so the schedule barely shifts), less
        5 % for checkpoints and the machine's moods; never more than the steps asked for. Sets
        ``config.steps`` and the warm-up."""
        config = self.config
        left = config.time_budget - (time.monotonic() - self._created)
        rate = steps_timed / max(seconds_timed, 1e-9)
        config.steps = min(self._most_steps, max(self.step + 1, self.step + int(rate * left * 0.95)))
        self.warmup = self._warmup(config.steps)
        return config.steps

    def _resolve_arch(self) -> None:
        """``--init`` without ``--arch`` trains the architecture and params of the weights named."""
        config = self.config
        if self._init and not config.arch:
            config.arch, config.params = self._init.arch, {**self._init.params, **config.params}
        if not config.arch:
            raise UsageError("give --arch (or --init NAME to fine-tune a registered model)")

    def _load_init(self, init: InitWeights) -> None:
        if init.arch != self.config.arch:
            raise UsageError(f"--init {init.label} is arch '{init.arch}', not '{self.config.arch}'")
        hub.load_strict(self.model, init.state, ModelSpec(name=init.label, arch=init.arch), Path(init.label))

    # -- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        folder = self.out / CHECKPOINTS
        folder.mkdir(parents=True, exist_ok=True)
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "elapsed": self.elapsed,
            "config": json.dumps(asdict(self.config)),
            "lineage": list(self.lineage),
        }
        path = folder / f"step_{self.step:07d}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        latest_tmp = folder / (LATEST + ".tmp")
        torch.save(state, latest_tmp)
        os.replace(latest_tmp, folder / LATEST)
        return path

    def _resume(self) -> None:
        path = self.out / CHECKPOINTS / LATEST
        if not path.is_file():
            raise UsageError(f"nothing to resume in {self.out}", "start without --resume")
        state = torch.load(path, map_location=self.device, weights_only=True)
        saved = json.loads(state["config"])
        for key in ("arch", "params", "scale", "fps_x", "frames_in", "patch", "batch", "seed"):
            if saved[key] != asdict(self.config)[key]:
                raise UsageError(
                    f"--resume with a different --{key.replace('_', '-')} ({saved[key]} in the checkpoint)"
                )
        saved_degradation = saved.get("degradation", "standard")  # runs from before the option were standard
        if saved_degradation != self.config.degradation:
            raise UsageError(f"--resume with a different --degradation ({saved_degradation} in the checkpoint)")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.elapsed = state["step"], state["elapsed"]
        self.lineage = tuple(sorted(set(self.lineage) | set(state.get("lineage", ()))))

    # -- validation -------------------------------------------------------------------------------
    def validate(self, clips: list[tuple[str, list]]) -> float:
        """Mean PSNR-Y of the eval protocol on the validation clips."""
        self.model.eval()
        upscaler = Upscaler(self.config.spec(), self.model, self.config.scale, self.device, half=False)
        scores = [
            score_clip(
                name,
                frames,
                upscaler,
                scale=self.config.scale,
                fps_x=self.config.fps_x,
                window=upscaler.spec.window,
                overlap=upscaler.spec.overlap,
                degradation=self.config.degradation,
            )
            for name, frames in clips
        ]
        self.model.train()
        return sum(s.psnr_y for s in scores) / len(scores)

    def _validation_clips(self) -> list[tuple[str, list]]:
        """A few validation clips, cut to at most 7 frames and 256 pixels a side to keep it quick."""
        clips = []
        for clip in find_clips(self.config.val)[: self.config.val_clips]:
            frames = read_clip(clip)[:7]
            h, w = frames[0].shape[:2]
            y, x = max(0, (h - 256) // 2), max(0, (w - 256) // 2)
            clips.append((clip.name, [f[y : y + 256, x : x + 256] for f in frames]))
        return clips

    def _loss(self, lr_in: torch.Tensor, target: torch.Tensor, factor: int) -> torch.Tensor:
        """The network's ``training_loss`` (Charbonnier on its output unless it defines its own)."""
        try:
            return self.model.training_loss(lr_in, target, factor, self.step / self.config.steps).float()
        except ValueError as exc:  # the network refuses this shape or factor
            hint = f"does it upscale x{self.config.scale} in space and x{factor} in time?"
            raise TrainingError(f"arch '{self.config.arch}': {exc}", hint) from None

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, cache: FrameCache, on_log: Callable[[StepLog], None] | None = None) -> list[StepLog]:
        config = self.config
        self.lineage = tuple(sorted(set(self.lineage) | {clip_source(name) for name in cache.names}))
        sampler = PatchSampler(
            cache, frames_in=config.frames_in, fps_x=config.fps_x, patch=config.patch, scale=config.scale,
            seed=config.seed, time_factors=self.time_factors, degradation=config.degradation,
        )  # fmt: skip
        val_clips = self._validation_clips() if config.val else []
        logs: list[StepLog] = []
        log_path = self.out / "train.jsonl"
        self.out.mkdir(parents=True, exist_ok=True)
        on_gpu = self.device.type == "cuda"
        prefetch = Prefetcher(sampler, config.batch, self.step, crops_only=on_gpu)
        self.model.train()
        began, losses = time.perf_counter() - self.elapsed, []
        # With a time budget, the steps are set from the rate of steps 5-25 of this run.
        timing = {self.step + 5: None, self.step + 25: None} if config.time_budget else {}
        try:
            while self.step < config.steps:
                if on_gpu:  # uint8 crops cross the bus; the GPU makes the input
                    lr_in, target = sampler.degrade(prefetch.next().to(self.device, non_blocking=True), self.step)
                else:
                    lr_in, target = prefetch.next()
                    lr_in = lr_in.to(self.device, non_blocking=True)
                    target = target.to(self.device, non_blocking=True)
                factor = sampler.factor(self.step)
                with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                    loss = self._loss(lr_in, target, factor)
                if not torch.isfinite(loss):
                    raise TrainingError(f"the loss became {loss.item()} at step {self.step}", "lower --lr")
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.parameters, config.clip_grad)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.scheduler.step()
                self.step += 1
                losses.append(loss.item())
                self.elapsed = time.perf_counter() - began
                if self.step in timing:
                    timing[self.step] = self.elapsed
                    (first, t0), (last, t1) = timing.items()
                    if t0 is not None and t1 is not None:
                        self.fit_steps_to_budget(last - first, t1 - t0)
                val_psnr = None
                if val_clips and (self.step % config.val_every == 0 or self.step == config.steps):
                    val_psnr = self.validate(val_clips)
                if self.step % config.log_every == 0 or val_psnr is not None or self.step == config.steps:
                    entry = StepLog(
                        self.step, config.steps, sum(losses) / len(losses), self.scheduler.get_last_lr()[0],
                        self.elapsed, val_psnr,
                    )  # fmt: skip
                    losses = []
                    logs.append(entry)
                    with open(log_path, "a") as f:
                        f.write(json.dumps(asdict(entry)) + "\n")
                    if on_log is not None:
                        on_log(entry)
                if self.step % config.save_every == 0 or self.step == config.steps:
                    self.save_checkpoint()
        except KeyboardInterrupt:
            if self.step:
                self.save_checkpoint()  # Ctrl-C loses nothing: --resume continues from here
            raise
        finally:
            prefetch.close()
        self.model.eval()
        return logs
