#!/usr/bin/env python3
"""What a GPU draw runs: machine facts, CUDA tests, a speed matrix, then training on staged data.

A GPU machine is lent now and then, for about 15 minutes in all and at most 10 minutes a command
(DEVELOPERS.md, "The machines"), with a bare image: its own python3, torch and torchvision, no
PyAV, no network, and at most 64 MiB of working tree per call. So the draw is a few calls, prepared
and checked here (benchmarks/README.md, "The GPU campaign"):

    python benchmarks/gpu_campaign.py --prepare      # here: .gpu-parts/1..P, one per call, and the calls
    # device tool, call 1: carry [".gpu-parts/1"], the measuring stages
    # device tool, last call: carry [".gpu-parts/P"], training and the judge

Every call first gathers the part it carried into ``.gpu-store`` (``campaign_staging``: checked
against the part's manifest, kept by the warm machine between calls) and records what has arrived.
Stages, each in its own process with a time box, results written to ``DIR/campaign.json`` as each
one ends (a stage that overruns is killed and the next one starts; nothing earlier is lost):

1. ``machine``: nvidia-smi, driver, torch/torchvision/PyAV versions, free GPU memory;
2. ``pytest``: ``pytest -m cuda`` (tests/test_cuda.py: what is skipped where there is no GPU);
3. ``bench``: ``stvsr bench`` rows (``stvsr_cli.bench.bench``, one per line as it finishes), with
   the plain baseline in the same run so that each speed-up is a ratio measured side by side;
4. ``dcn``: the deformable convolution's kernels side by side, and a profile of one zsm forward;
5. ``frames``: per model, peak memory at two sizes and the largest frame it runs untiled under
   80 and 24 GiB;
6. ``probe`` (not by default: measured on 2026-11-30, ``KNOWN_RATE``): a few training steps of
   each candidate network: steps/s and memory;
7. ``train``: ``stvsr train --time-budget`` of the chosen candidate on the training data that
   arrived (its schedule ends inside the box), checkpoints copied to DIR as they are written, then
   the export (weights, card, registry entry, scores on the carried eval and held-out clips);
8. ``judge``: the candidate, the shipped model and classic on the same clips; the candidate comes
   back only if it beats the shipped model on both sets (``beats_shipped``).

``--dry-run`` runs every stage on the CPU at small sizes, on synthetic clips staged in two parts
through the same code (``--drop-part K`` loses one on the way); ``--dry-run --quick`` runs them at
the smallest sizes (tiny networks, the CUDA test file alone), about a minute of CPU time: the
test suite runs that (tests/test_gpu_campaign.py), so the campaign cannot rot. A dry run has no time
boxes that a busy CPU can break: each stage gets ``DRY_BOX``, a guard against a hang.

What comes back from the device is at most 8 files, 16 MB each, so DIR holds: campaign.json,
campaign.log (every stage's output), the latest checkpoint (split into 15 MB parts if bigger),
and, when they win, the exported weights, card and registry entry.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # campaign_staging beside this file
import campaign_staging as staging

PAYLOAD = REPO / ".gpu"  # --prepare's build folder here (PyAV's archive, cut clips); ignored by git
PARTS = REPO / ".gpu-parts"  # one folder per call (carry: [".gpu-parts/K"]); ignored by git
STORE = REPO / ".gpu-store"  # on the machine: where the parts are gathered; kept between warm calls
PAYLOAD_LIMIT = 64 * 2**20  # the device tool's limit on the working tree of one call
PAYLOAD_MARGIN = 2**20  # the tree may grow a little between --prepare and the calls
PART_BYTES = 15 * 10**6  # files back from the device: at most 16 MB each
SHARED_DATA = REPO.parent / "shared" / "data"
# Training clips travel as they are: re-encoding them smaller costs fine texture first
# (benchmarks/pack-clips-2026-12-08-cpu.json: a third fewer bytes costs 3-8 dB of PSNR-Y against
# the originals, and at 45 dB nothing is saved).
PACKING = staging.COPY
# The held-out clips travel as their first frames (enough to rank two models on the machine; the
# whole clips score them here before weights are committed).
UNSEEN_FRAMES = 30

# The network the training stage trains, and the candidates the probe times beside it.
CANDIDATES = {
    "stvun-64": ("stvun", {"nf": 64, "levels": 3, "flow_nf": 24, "frames": 4}),
    "stvun-96": ("stvun", {"nf": 96, "levels": 3, "flow_nf": 32, "frames": 4}),
    "zsm-32": ("zsm", {"nf": 32, "groups": 8, "front_rbs": 5, "back_rbs": 10, "global_residual": True}),
}
CHOSEN = "stvun-64"
TRAIN = {"batch": 32, "patch": 128, "lr": 5e-4, "frames_in": 4}
# Each draw continues the shipped default (trained on the H200 on 2026-11-30 from CHOSEN's params)
# with a new optimiser and a shorter warm restart, so that GPU minutes add up across sessions.
CONTINUE_FROM, CONTINUE_LR = "stvun-gpu", 3e-4
# What the training stage exports, beside the shipped CONTINUE_FROM it must beat on the eval clips
# AND on the held-out ones to come back at all (``beats_shipped``).
CANDIDATE = "stvun-next"
TRAIN_DRY = {"batch": 2, "patch": 32, "lr": 5e-4, "frames_in": 4}
DRY_PARAMS = {
    "stvun": {"nf": 8, "levels": 2, "flow_nf": 4, "frames": 4},
    "zsm": {"nf": 8, "groups": 1, "front_rbs": 1, "back_rbs": 1},
}

# The speed matrix: (model, LR size, options), most wanted first (a stage cut off by its time box
# keeps the rows done). The speed-ups each alone against the same model's default row and
# its plain baseline (copy streams and colour on the device are off by default until measured); "stage_times" adds a second end-to-end run with
# synchronised stages. Rows measured on 2026-11-30 and unchanged since (zsm fp32, 180x144, the
# other models' defaults, classic) are left out: benchmarks/README.md has them.
BENCH = [
    ("zsm", (480, 270), {"stage_times": True}),
    ("zsm", (480, 270), {"plain": True, "stage_times": True}),
    ("zsm", (480, 270), {"deform_conv": "triton"}),
    ("zsm", (480, 270), {"batch_windows": 4}),
    ("zsm", (480, 270), {"copy_stream": True}),
    ("zsm", (480, 270), {"device_colour": True}),
    ("zsm", (480, 270), {"copy_stream": True, "device_colour": True, "stage_times": True}),
    ("stvun-gpu", (480, 270), {"stage_times": True}),  # the default model
    ("stvun-gpu", (480, 270), {"plain": True}),
    ("stvun-gpu", (480, 270), {"batch_windows": 4}),
    ("stvun-gpu", (480, 270), {"copy_stream": True, "device_colour": True}),
    ("zsm", (480, 270), {"deform_conv": "torch"}),
    ("zsm", (480, 270), {"channels_last": False}),
    ("zsm", (480, 270), {"codec": "libx264"}),
    ("zsm", (960, 540), {}),
    ("stvun-gpu", (960, 540), {}),
    ("stinet", (480, 270), {"deform_conv": "triton"}),
    ("davsr", (480, 270), {"deform_conv": "triton"}),
    ("zsm", (480, 270), {"cuda_graphs": True}),  # compiling takes long: last
    ("zsm", (480, 270), {"compile": True}),
]
BENCH_DRY = [
    ("classic", (64, 48), {}),
    ("classic", (64, 48), {"plain": True}),
    ("stvun", (32, 24), {"codec": "libx264"}),
    ("stvun", (32, 24), {"batch_windows": 2}),
    ("stvun", (32, 24), {"device_colour": True, "stage_times": True}),
]

# The largest frame each model runs untiled under a memory cap (GiB; 24: the consumer cards
# hobbyists have), found from its memory profile and checked with one call at that size.
FRAME_MODELS = ["zsm", "stvun-gpu", "stinet", "tpsr", "davsr"]
FRAME_CAPS_GIB = (80, 24)
FRAME_SIZES = ((480, 270), (960, 540))  # peak memory of one call at each
FRAMES_DRY = {"models": ["stvun"], "caps": (0.25, 0.12), "sizes": ((32, 24), (64, 48)), "sides": (24, 48)}
# ``--dry-run --quick``: tpsr as a tiny network (the "params" of a worker's spec: the cheapest network
# under torch's FLOP counter, 6 s of CPU a row against tiny stvun's 25), one bench row for the speed
# switches together, one memory cap, one probe candidate, the CUDA test file alone (skipped off CUDA).
QUICK_PARAMS = {"tpsr": {"imdn_nf": 8, "imdn_blocks": 1, "nf": 8, "rs_blocks": 1, "refine_nf": 8}}
BENCH_QUICK = [
    ("classic", (64, 48), {}),
    ("classic", (64, 48), {"plain": True}),
    ("tpsr", (32, 24), {"codec": "libx264", "batch_windows": 2, "device_colour": True, "stage_times": True}),
]
FRAMES_QUICK = {"models": ["tpsr"], "caps": (0.05,), "sizes": ((32, 24),), "sides": (24, 48)}  # ~45 KiB a pixel
PYTEST_QUICK = ("tests/test_cuda.py",)
# Training steps/s of CHOSEN at TRAIN's batch and patch when the probe is not run (H200, 2026-11-30).
KNOWN_RATE = 8.379

# Each stage's time box on the GPU (seconds), at most what the budget leaves less the RESERVE of each
# later stage of the call (the least it can do something useful in); training takes what is left
# but the judge's box and a margin. A stage killed at its box gets STOP_GRACE more to save.
BOXES = {"pytest": 60, "bench": 170, "dcn": 40, "frames": 45, "probe": 50, "judge": 45}
RESERVE = {"pytest": 30, "bench": 45, "dcn": 20, "frames": 20, "probe": 30, "train": 100, "judge": 45}
MARGIN = 5
# The calls of a draw (DEVELOPERS.md: 15 minutes of device time, a start included): the measuring
# stages ride with the first part, training and the judge with the last.
MEASURE_STAGES = ("machine", "pytest", "bench", "dcn", "frames")
TRAIN_STAGES = ("machine", "train", "judge")
MEASURE_BUDGET = 330
# What the training command keeps back from its box for the export (its evaluation against
# classic on the carried clips) after the schedule ends (H200, 2026-11-30: 13 s with start-up).
EXPORT_RESERVE = 30
TRAIN_STARTUP = 15  # from the command's start to the trainer's (imports, CUDA), outside --time-budget
STOP_GRACE = 20.0
DEVICE_CALL_LIMIT = 600  # the device tool's limit on one command (seconds)
DRY_BOX = 300  # a dry run's stages: a guard against a hang, never a share of a budget


BOXED = ("pytest", "bench", "dcn", "frames", "probe", "train", "judge")  # in the order they run


def time_box(stage: str, left: float, only: tuple[str, ...] = BOXED, dry_run: bool = False) -> float:
    """Seconds ``stage`` may run with ``left`` seconds of the budget left, keeping the reserve of
    each stage of ``only`` that runs after it."""
    if dry_run:
        return DRY_BOX
    later = BOXED[BOXED.index(stage) + 1 :]
    keep = sum(RESERVE[s] for s in later if s in only) + MARGIN
    if stage == "train":
        return left - keep
    return max(1.0, min(BOXES[stage], left - keep))


def planned_boxes(budget: float, only: tuple[str, ...]) -> dict[str, float]:
    """The time boxes of the stages in ``only`` when each one before runs to its box: the plan of
    a call of ``budget`` seconds, its worst case (what a stage leaves goes to training)."""
    boxes, left = {}, budget
    for stage in BOXED:
        if stage in only:
            boxes[stage] = time_box(stage, left, only)
            left -= boxes[stage]
    return boxes


# -- the record ---------------------------------------------------------------------------------
@dataclass
class Campaign:
    out: Path
    dry_run: bool
    budget: float
    quick: bool = False  # with dry_run: the smallest sizes
    drop_part: int | None = None  # with dry_run: the staging call whose part is lost on the way
    began: float = field(default_factory=time.monotonic)
    record: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.log_path = self.out / "campaign.log"
        self.record.update(
            campaign="stvsr GPU campaign", dry_run=self.dry_run, quick=self.quick, budget_s=self.budget,
            started=time.strftime("%Y-%m-%d %H:%M:%S %Z"), stages={},
        )  # fmt: skip
        self.save()

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.began)

    @property
    def scratch(self) -> Path:
        """Where stages keep their working files: /tmp on the device; beside DIR in a dry run (two
        dry runs at once, as two test sessions on one machine, must not share them)."""
        if not self.dry_run:
            return Path("/tmp")
        folder = self.out.parent / "dry-tmp"
        folder.mkdir(exist_ok=True)
        return folder

    @property
    def store(self) -> Path:
        """Where the staged parts are gathered: the machine's ``STORE``; beside DIR in a dry run."""
        return self.out.parent / "dry-store" if self.dry_run else STORE

    def save(self) -> None:
        self.record["elapsed_s"] = round(time.monotonic() - self.began, 1)
        tmp = self.out / "campaign.json.tmp"
        tmp.write_text(json.dumps(self.record, indent=1, default=str))
        tmp.replace(self.out / "campaign.json")

    def log(self, text: str) -> None:
        with open(self.log_path, "a") as f:
            f.write(text if text.endswith("\n") else text + "\n")

    def stage(self, name: str, result: dict) -> None:
        self.record["stages"][name] = result
        self.save()


def run_boxed(campaign: Campaign, name: str, cmd: list[str], seconds: float, env: dict | None = None) -> dict:
    """Run ``cmd`` with its output appended to the log; killed (SIGTERM, then SIGKILL) after ``seconds``."""
    seconds = max(1.0, seconds)
    campaign.log(f"\n===== {name}: {' '.join(cmd)} (time box {seconds:.0f} s) =====")
    began = time.monotonic()
    with open(campaign.log_path, "a") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, **(env or {})},
            start_new_session=True,
        )  # fmt: skip
        timed_out = False
        try:
            proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
            _stop(proc)
    return {"rc": proc.returncode, "timed_out": timed_out, "seconds": round(time.monotonic() - began, 1)}


def _stop(proc: subprocess.Popen, grace: float = STOP_GRACE) -> None:
    """SIGTERM (a trainer saves its checkpoint), then SIGKILL after ``grace`` seconds."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def python_cmd(*args: str) -> list[str]:
    return [sys.executable, *args]


# -- setup: PyAV and the package on a bare image ---------------------------------------------------
def setup_environment(campaign: Campaign) -> dict:
    """Make ``av`` and ``stvsr_cli`` importable here and in child processes: PyAV from the carried
    archive when the image lacks it, the package from this checkout (its weights folder linked in)."""
    facts: dict = {}
    paths = [str(REPO)]
    try:
        import av  # noqa: F401
    except ImportError:
        archive = campaign.store / "av.tar.xz"
        if not archive.is_file():
            raise RuntimeError(f"no PyAV here and none arrived ({archive}): run the staging calls first")
        site = Path("/tmp/stvsr-site")
        with tarfile.open(archive) as tar:
            tar.extractall(site, filter="data")
        paths.insert(0, str(site))
        sys.path.insert(0, str(site))
        facts["av_from"] = str(archive)
    link = REPO / "stvsr_cli" / "weights"
    try:
        import stvsr_cli.weights  # noqa: F401  (installed: weights/ is the package stvsr_cli.weights)
    except ImportError:
        if not link.exists():
            link.symlink_to(Path("..") / "weights")  # a checkout on PYTHONPATH: the same package layout
        facts["weights_linked"] = True
    sys.path.insert(0, str(REPO))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        paths + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    os.environ["PYTHONUNBUFFERED"] = "1"
    return facts


# -- stage 1: the machine ----------------------------------------------------------------------------
def stage_machine(campaign: Campaign) -> dict:
    import av
    import torch

    facts: dict = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "av": av.__version__,
        "cpu_count": os.cpu_count(),
    }
    try:
        import torchvision

        facts["torchvision"] = torchvision.__version__
    except Exception as exc:  # a missing or broken torchvision is a finding, not a failure
        facts["torchvision"] = f"unavailable: {exc}"
    from stvsr_cli.models.ops.dcn import torchvision_available

    facts["torchvision_ops"] = torchvision_available()
    facts["h264_nvenc_in_pyav"] = "h264_nvenc" in av.codecs_available
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        free, total = torch.cuda.mem_get_info()
        facts.update(
            gpu=props.name, capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count,
            memory_total_gib=round(total / 2**30, 1), memory_free_gib=round(free / 2**30, 1),
            cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported(),
        )  # fmt: skip
        from stvsr_cli.io.encode import encoder_open_error

        for codec in ("h264_nvenc", "hevc_nvenc"):  # 2026-11-30: neither opened on the H200
            error = encoder_open_error(codec, "yuv420p")
            facts[f"{codec}_opens"] = error is None
            if error:
                facts[f"{codec}_error"] = error
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,memory.free,clocks.max.sm,power.limit",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        facts["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    campaign.log("machine: " + json.dumps(facts))
    return facts


# -- stage 2: the CUDA tests -------------------------------------------------------------------------
def stage_pytest(campaign: Campaign, seconds: float) -> dict:
    junit = campaign.scratch / "stvsr-cuda-junit.xml"
    junit.unlink(missing_ok=True)
    paths = PYTEST_QUICK if campaign.quick else ("tests",)
    result = run_boxed(
        campaign, "pytest -m cuda",
        python_cmd(
            "-m", "pytest", "-m", "cuda", "-s", "-rA", "-p", "no:cacheprovider", "--continue-on-collection-errors",
            f"--junitxml={junit}", *paths,
        ),
        seconds,
    )  # fmt: skip
    result.update(_junit_summary(junit))
    result["measurements"] = [
        line.split("MEASURE", 1)[1].strip() for line in campaign.log_path.read_text().splitlines() if "MEASURE " in line
    ]
    return result


def _junit_summary(path: Path) -> dict:
    if not path.is_file():
        return {}
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    cases, failed, skipped = [], [], []
    for case in root.iter("testcase"):
        name = case.get("name")
        cases.append(name)
        if case.find("failure") is not None or case.find("error") is not None:
            node = case.find("failure") if case.find("failure") is not None else case.find("error")
            failed.append({"test": name, "message": (node.get("message") or "")[:400]})
        elif case.find("skipped") is not None:
            skipped.append(name)
    return {"tests": len(cases), "failed": failed, "skipped": len(skipped)}


# -- stage 3: the speed matrix -----------------------------------------------------------------------
def stage_bench(campaign: Campaign, seconds: float) -> dict:
    rows_path = campaign.scratch / "stvsr-bench.jsonl"
    rows_path.unlink(missing_ok=True)
    matrix = BENCH_QUICK if campaign.quick else BENCH_DRY if campaign.dry_run else BENCH
    spec = json.dumps({
        "rows": matrix, "device": "cpu" if campaign.dry_run else "cuda", "frames": 8 if campaign.dry_run else 24,
        "params": QUICK_PARAMS if campaign.quick else {},
    })  # fmt: skip
    result = run_boxed(campaign, "bench", python_cmd(__file__, "--worker", "bench", spec, str(rows_path)), seconds)
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()] if rows_path.is_file() else []
    result.update(rows=rows, planned=len(matrix))
    return result


def worker_bench(spec_text: str, rows_path: str) -> None:
    """One process for the whole matrix (torch and CUDA start once); each row appended when done."""
    from stvsr_cli.bench import bench
    from stvsr_cli.models.speed import Speed

    spec = json.loads(spec_text)
    registry = _registry_with(spec.get("params", {}))
    speed_keys = {"channels_last", "compile", "cuda_graphs", "batch_windows", "copy_stream", "deform_conv"}
    for model, size, options in spec["rows"]:
        began = time.monotonic()
        speed = Speed(**{k: v for k, v in options.items() if k in speed_keys})
        rest = {"stage_times": False, **{k: v for k, v in options.items() if k not in speed_keys}}
        try:
            row = bench(
                model, size=tuple(size), frames=spec["frames"], device=spec["device"], speed=speed, registry=registry,
                **rest,
            )  # fmt: skip
            row = row.to_json()
        except Exception as exc:  # one row failing must not lose the others
            row = {"model": model, "width": size[0], "height": size[1], "error": f"{type(exc).__name__}: {exc}"}
        row.update(options=options, wall_s=round(time.monotonic() - began, 1))
        _emit_row(row, rows_path)


def _registry_with(params: dict):
    """The registry, with the models named in ``params`` built with those params instead (a dry
    run's tiny networks; their weights, made for the registered size, are not loaded)."""
    import dataclasses

    from stvsr_cli.models.registry import Registry, load_registry

    registry = load_registry()
    models = dict(registry.models)
    for name, values in params.items():
        models[name] = dataclasses.replace(models[name], params=dict(values), weights=None)
    return Registry(models=models, default=registry.default)


def _emit_row(row: dict, path: str) -> None:
    """A worker's result row: printed (into the log), appended to ``path``; then the GPU's cache freed."""
    print(json.dumps(row), flush=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
    _release_gpu()


def _release_gpu() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- stage: the deformable convolution, kernel against kernel, and where zsm's time goes ------------
def stage_dcn(campaign: Campaign, seconds: float) -> dict:
    """``benchmarks/dcn_speed.py --triton`` (Triton vs torchvision vs ours in float16 at zsm's
    shapes) and ``--profile`` (torch.profiler over one zsm forward: the top kernels), into the log.
    A dry run checks that both refuse in one line without CUDA."""
    script = str(REPO / "benchmarks" / "dcn_speed.py")
    began = time.monotonic()
    speed = run_boxed(campaign, "dcn --triton", python_cmd(script, "--triton", "--repeat", "3"), seconds * 0.5)
    profile = run_boxed(
        campaign, "dcn --profile", python_cmd(script, "--profile"), seconds - (time.monotonic() - began)
    )
    refused = campaign.dry_run and speed["rc"] != 0 and profile["rc"] != 0  # no CUDA: one line each, exit 1
    rc = 0 if refused else max(speed["rc"] or 0, profile["rc"] or 0)
    return {"rc": rc, "timed_out": speed["timed_out"] or profile["timed_out"], "speed": speed, "profile": profile,
            "seconds": round(time.monotonic() - began, 1)}  # fmt: skip


# -- stage: the largest untiled frame under a memory cap ---------------------------------------------
def stage_frames(campaign: Campaign, seconds: float) -> dict:
    out = campaign.scratch / "stvsr-frames.jsonl"
    out.unlink(missing_ok=True)
    spec = {**FRAMES_QUICK, "params": QUICK_PARAMS} if campaign.quick else FRAMES_DRY if campaign.dry_run else {
        "models": FRAME_MODELS, "caps": FRAME_CAPS_GIB, "sizes": FRAME_SIZES, "sides": (128, 256),
    }  # fmt: skip
    result = run_boxed(
        campaign, "frames", python_cmd(__file__, "--worker", "frames", json.dumps(spec), str(out)), seconds
    )
    result["models"] = [json.loads(line) for line in out.read_text().splitlines()] if out.is_file() else []
    return result


def worker_frames(spec_text: str, out_path: str) -> None:
    """Per model (random weights, the device's defaults): the peak of one call at each size; the
    memory profile (``fixed + per_pixel * pixels``, as the tiler predicts); and for each cap the
    largest 16:9 frame it predicts, checked by one call under that cap (the allocator limited by
    ``torch.cuda.set_per_process_memory_fraction``), 15 % smaller after each failure, 3 tries."""
    import dataclasses

    import torch

    from stvsr_cli.models.loader import load_model
    from stvsr_cli.pipeline.memory import measure_profile
    from stvsr_cli.pipeline.tiles import is_out_of_memory

    spec = json.loads(spec_text)
    registry = _registry_with(spec.get("params", {}))
    cuda = torch.cuda.is_available()
    total = torch.cuda.get_device_properties(0).total_memory if cuda else None
    for name in spec["models"]:
        row: dict = {"model": name}
        try:
            model_spec = dataclasses.replace(registry.get(name), weights=None)
            scale = 4 if model_spec.scales is None else model_spec.scales[0]
            fps_x = 2 if model_spec.fps_x is None else model_spec.fps_x[0]
            upscaler = load_model(model_spec, scale=scale, device="cuda" if cuda else "cpu", random_weights=True)
            window, multiple = model_spec.window, max(8, upscaler.size_multiple)
            weights = sum(p.numel() * p.element_size() for p in upscaler.module.parameters())
            row.update(window=window, half=upscaler.half, weights_gib=_gib(weights))

            row["peak_gib"] = {}
            for width, height in spec["sizes"]:
                try:
                    _, peak = _timed_call(upscaler, window, fps_x, width, height)
                    row["peak_gib"][f"{width}x{height}"] = _gib(peak + weights)
                except Exception as exc:
                    if not is_out_of_memory(exc):
                        raise
                    row["peak_gib"][f"{width}x{height}"] = "out of memory"
                    del exc
                    _release_gpu()
            profile = measure_profile(upscaler, window, fps_x, sides=tuple(spec["sides"]))
            row["profile"] = {"fixed_gib": _gib(profile.fixed), "per_lr_pixel_kib": round(profile.per_pixel / 1024, 1)}
            row["largest"] = {}
            for cap in spec["caps"]:
                cap_bytes = cap * 2**30
                room = cap_bytes - weights - profile.fixed
                pixels = max(0.0, room / max(profile.per_pixel, 1.0))
                height = int(math.sqrt(pixels * 9 / 16)) // multiple * multiple
                entry: dict = {"predicted": f"{height * 16 // 9 // multiple * multiple}x{height}", "tries": []}
                if cuda:
                    torch.cuda.set_per_process_memory_fraction(min(1.0, cap_bytes / total))
                for _ in range(3):
                    width = height * 16 // 9 // multiple * multiple
                    if height < multiple:
                        break
                    try:
                        seconds, peak = _timed_call(upscaler, window, fps_x, width, height)
                        entry["tries"].append({"size": f"{width}x{height}", "ok": True, "seconds": round(seconds, 2),
                                               "peak_gib": _gib(peak + weights)})  # fmt: skip
                        entry["largest"] = f"{width}x{height}"
                        break
                    except Exception as exc:
                        if not is_out_of_memory(exc):
                            raise
                        entry["tries"].append({"size": f"{width}x{height}", "ok": False})
                        del exc
                        _release_gpu()
                        height = int(height * 0.85) // multiple * multiple
                if cuda:
                    torch.cuda.set_per_process_memory_fraction(1.0)
                row["largest"][f"{cap}GiB"] = entry
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
        _emit_row(row, out_path)


def _timed_call(upscaler, window: int, fps_x: int, width: int, height: int) -> tuple[float, int]:
    """Seconds and peak memory (above what was in use) of one call on a random window."""
    import torch

    from stvsr_cli.pipeline.memory import PeakMeter

    frames = torch.rand(window, 3, height, width, device=upscaler.device)
    began = time.perf_counter()
    with PeakMeter(upscaler.device) as meter:
        upscaler(frames, fps_x)
        if upscaler.device.type == "cuda":
            torch.cuda.synchronize()
    return time.perf_counter() - began, meter.peak


def _gib(value: float) -> float:
    return round(value / 2**30, 3)


# -- the training data: staged in parts ---------------------------------------------------------------
def stage_data(campaign: Campaign) -> dict:
    """Gather the parts carried so far into the store and say what arrived. A dry run first makes
    synthetic clips and stages them through the same code, as calls would, losing ``drop_part``."""
    if campaign.dry_run:
        dry_stage_parts(campaign)
    else:
        campaign.record["received"] = staging.receive(PARTS, campaign.store)
    plan_path = campaign.store / staging.PLAN
    plan = json.loads(plan_path.read_text()) if plan_path.is_file() else {}
    campaign.record["plan"] = {k: v for k, v in plan.items() if k != "calls"}
    return staging.arrival(campaign.store)


def dry_stage_parts(campaign: Campaign) -> None:
    """Three synthetic training clips, an eval clip and a held-out one, planned with a room that
    makes two parts (the last: the eval and held-out clips and one training clip), then received
    one call at a time; the part ``drop_part`` never arrives."""
    from stvsr_cli.bench import synthetic_clip
    from stvsr_cli.training.split import VAL_UNSEEN

    source = campaign.out.parent / "dry-data"
    source.mkdir(parents=True, exist_ok=True)
    clips = [("train", "a", 16), ("train", "b", 16), ("train", "c", 16), ("eval", "e", 7), ("unseen", VAL_UNSEEN[0], 9)]
    items: dict[str, list] = {"train": [], "eval": [], "unseen": []}
    for folder, name, frames in clips:  # stvun draws up to x4 in time: 13 frames a sample
        path = source / f"{name}.mp4"
        if not path.exists():
            synthetic_clip(path, frames, 96, 64)
        items[folder].append(staging.Item(f"{folder}/{path.name}", str(path), path.stat().st_size,
                                          frames if folder == "train" else 0))  # fmt: skip
    required = items["eval"] + items["unseen"]
    room = sum(i.bytes for i in required) + max(i.bytes for i in items["train"])
    parts = staging.plan_parts(required, items["train"], room)
    root, store = campaign.out.parent / "dry-parts", campaign.store
    extra = {"licence": "all", "packing": PACKING, "val_unseen": [VAL_UNSEEN[0]], "eval": ["e"], "room_bytes": room}
    staging.write_parts(parts, root, extra)
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir(parents=True)
    received = []
    for k in range(1, len(parts) + 1):
        carried = campaign.out.parent / "dry-carried"  # what one call brings: its own part alone
        shutil.rmtree(carried, ignore_errors=True)
        carried.mkdir()
        if k != campaign.drop_part:
            shutil.copytree(root / str(k), carried / str(k))
        received.append(staging.receive(carried, store))
    campaign.record["received"] = received


def training_clips(campaign: Campaign) -> tuple[list[str], list[str], list[str]]:
    """(training, eval, held-out) folders in the store, each left out where nothing arrived."""

    def present(name: str) -> list[str]:
        folder = campaign.store / name
        return [str(folder)] if folder.is_dir() and any(folder.iterdir()) else []

    return present("train"), present("eval"), present("unseen")


# -- stage 4: the candidates' speed --------------------------------------------------------------------
def stage_probe(campaign: Campaign, seconds: float, data: list[str]) -> dict:
    out = campaign.scratch / "stvsr-probe.jsonl"
    out.unlink(missing_ok=True)
    candidates = [CHOSEN] if campaign.quick else list(CANDIDATES)
    cache = str(campaign.scratch / "stvsr-frame-cache")
    spec = json.dumps({"data": data, "dry": campaign.dry_run, "candidates": candidates, "cache": cache})
    result = run_boxed(campaign, "probe", python_cmd(__file__, "--worker", "probe", spec, str(out)), seconds)
    result["candidates"] = [json.loads(line) for line in out.read_text().splitlines()] if out.is_file() else []
    return result


def worker_probe(spec_text: str, out_path: str) -> None:
    """Steps/s of each candidate at the training batch, the frames decoded once for all of them."""
    import tempfile

    import torch

    from stvsr_cli.training.data import load_frames
    from stvsr_cli.training.trainer import TrainConfig, Trainer

    spec = json.loads(spec_text)
    dry = spec["dry"]
    cache = load_frames(spec["data"], Path(spec["cache"]))
    settings = TRAIN_DRY if dry else TRAIN
    steps, timed_from = (3, 1) if dry else (25, 10)
    for label in spec.get("candidates", CANDIDATES):
        arch, params = CANDIDATES[label]
        params = DRY_PARAMS[arch] if dry else params
        row: dict = {"candidate": label, "arch": arch, "params": params, **settings}
        try:
            with tempfile.TemporaryDirectory() as tmp:
                config = TrainConfig(
                    arch=arch, params=dict(params), data=spec["data"], out=tmp, name=label, steps=steps,
                    log_every=1, save_every=10**9, device="cpu" if dry else "auto", **settings,
                )  # fmt: skip
                trainer = Trainer(config)
                if torch.cuda.is_available():
                    torch.cuda.reset_peak_memory_stats()
                logs = trainer.run(cache)
                first = next(entry for entry in logs if entry.step == timed_from)
                rate = (logs[-1].step - first.step) / max(1e-9, logs[-1].seconds - first.seconds)
                row.update(
                    parameters=sum(p.numel() for p in trainer.parameters), steps_per_s=round(rate, 3),
                    loss_first=round(logs[0].loss, 5), loss_last=round(logs[-1].loss, 5),
                )  # fmt: skip
                if torch.cuda.is_available():
                    row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
        _emit_row(row, out_path)


# -- stage 5: training ---------------------------------------------------------------------------------
def stage_train(
    campaign: Campaign, seconds: float, data: list[str], unseen: list[str], evaluate: list[str],
    rate: float | None, init: str | None = None, lr: float | None = None, permissive: bool = False,
) -> dict:  # fmt: skip
    """``stvsr train`` of the chosen candidate within ``seconds``: its ``--time-budget`` sets the
    steps from the speed of the first ones so that the schedule ends with ``EXPORT_RESERVE`` left
    for the export (and ``TRAIN_STARTUP`` spent before the trainer starts) (``--steps``, from the known rate, is only a ceiling). ``init`` names a registered
    model or a checkpoint file to start from; ``permissive`` trains on permissively licensed clips
    alone. The held-out clips go in with the data: training skips them by name and the export scores
    them."""
    if not data:
        return {"rc": 1, "error": "no training data arrived"}
    arch, params = CANDIDATES[CHOSEN]
    dry = campaign.dry_run
    params = DRY_PARAMS[arch] if dry else params
    settings = {**(TRAIN_DRY if dry else TRAIN), **({"lr": lr} if lr else {})}
    rate = rate or 5.0  # a guess, if the probe did not finish
    steps = 4 if dry else max(50, int(rate * seconds * 1.5))
    run = campaign.scratch / "stvsr-train" / CHOSEN
    shutil.rmtree(run, ignore_errors=True)
    cmd = python_cmd(
        "-m", "stvsr_cli", "train", "--arch", arch, "--params", json.dumps(params), "--out", str(run),
        "--name", CANDIDATE, "--steps", str(steps), "--batch", str(settings["batch"]), "--patch", str(settings["patch"]),
        "--lr", str(settings["lr"]), "--frames-in", str(settings["frames_in"]), "--save-every", "250" if not dry else "2",
        "--log-every", "50" if not dry else "1", "--cache-dir", str(campaign.scratch / "stvsr-frame-cache"),
        "--device", "cpu" if dry else "auto", *(["--init", init] if init else []),
        *([] if dry else ["--time-budget", str(int(seconds - EXPORT_RESERVE - TRAIN_STARTUP))]),
        *(["--permissive-only"] if permissive else []),
        *[a for d in data + unseen for a in ("--data", d)], *[a for d in evaluate for a in ("--eval", d)],
    )  # fmt: skip
    copier = CheckpointCopier(run / "checkpoints" / "latest.pt", campaign.out / "train")
    copier.start()
    try:
        result = run_boxed(campaign, "train", cmd, seconds)
    finally:
        copier.stop()
    result.update(
        candidate=CHOSEN, arch=arch, params=params, steps_ceiling=steps, rate=rate, init=init, permissive=permissive,
        run=str(run), **settings,
    )  # fmt: skip
    log = run / "train.jsonl"
    if log.is_file():
        entries = [json.loads(line) for line in log.read_text().splitlines()]
        result["log"] = entries[:: max(1, len(entries) // 40)] + entries[-1:]
        result["steps"] = entries[-1]["steps"] if entries else None
    result["checkpoint_parts"] = copier.parts
    return result


# -- stage 6: the candidate against the shipped weights ---------------------------------------------------
def beats_shipped(candidate: dict, shipped: dict) -> dict:
    """The export rule: new weights come back only if they beat the shipped ones in mean PSNR-Y on
    the eval clips AND on the held-out clips (each row: ``{"eval": {"psnr_y": ...}, "unseen": {...}}``)."""
    gains, missing = {}, []
    for label in ("eval", "unseen"):
        ours, theirs = candidate.get(label), shipped.get(label)
        if not ours or not theirs:
            missing.append(label)
            continue
        gains[label] = round(ours["psnr_y"] - theirs["psnr_y"], 3)
    wins = not missing and all(gain > 0 for gain in gains.values())
    return {"wins": wins, "gain_db": gains, "not_scored": missing}


def stage_judge(campaign: Campaign, seconds: float, train: dict, evaluate: list[str], unseen: list[str]) -> dict:
    """The exported candidate, the shipped model and classic on the same clips, in one process; the
    candidate's weights, card and registry entry are copied to DIR only if ``beats_shipped``."""
    run = Path(train.get("run", campaign.scratch / "none"))
    entry = run / f"{CANDIDATE}.toml"
    if not entry.is_file():
        return {"rc": 1, "error": "training exported nothing to judge"}
    shipped = "classic" if campaign.dry_run else CONTINUE_FROM  # a dry run's stand-in: no network to run
    out = campaign.scratch / "stvsr-judge.jsonl"
    out.unlink(missing_ok=True)
    spec = {"registry": str(entry), "models": list(dict.fromkeys([CANDIDATE, shipped, "classic"])),
            "eval": evaluate, "unseen": unseen, "device": "cpu" if campaign.dry_run else "auto"}  # fmt: skip
    result = run_boxed(
        campaign, "judge", python_cmd(__file__, "--worker", "judge", json.dumps(spec), str(out)), seconds
    )
    rows = {row["model"]: row for row in map(json.loads, out.read_text().splitlines())} if out.is_file() else {}
    result["models"] = list(rows.values())
    decision = beats_shipped(rows.get(CANDIDATE, {}), rows.get(shipped, {}))
    result.update(shipped=shipped, **decision)
    exported = {}
    if decision["wins"]:
        for suffix in (".safetensors", ".md", ".toml"):
            src = run / f"{CANDIDATE}{suffix}"
            if src.is_file():
                shutil.copy2(src, campaign.out / "train" / src.name)
                exported[suffix] = src.name
    result["exported"] = exported
    return result


def worker_judge(spec_text: str, out_path: str) -> None:
    """Mean PSNR-Y / SSIM-Y of each model on the eval and held-out clips (the eval protocol)."""
    from stvsr_cli.evaluation import evaluate
    from stvsr_cli.models.loader import load_model
    from stvsr_cli.models.registry import load_registry

    spec = json.loads(spec_text)
    registry = load_registry(spec["registry"])
    for name in spec["models"]:
        row: dict = {"model": name}
        try:
            model = load_model(registry.get(name), scale=4, device=spec["device"])
            for label in ("eval", "unseen"):
                if spec[label]:
                    scores = evaluate(spec[label], model, fps_x=2)
                    row[label] = {"psnr_y": round(scores.mean["psnr_y"], 3), "ssim_y": round(scores.mean["ssim_y"], 4),
                                  "clips": len(scores.clips)}  # fmt: skip
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
        _emit_row(row, out_path)


class CheckpointCopier(threading.Thread):
    """Copies the trainer's latest checkpoint into DIR whenever it changes (split into parts of
    ``PART_BYTES``), so a run cut off by the time limit still brings back weights to resume from."""

    def __init__(self, latest: Path, dest: Path) -> None:
        super().__init__(daemon=True)
        self.latest, self.dest = latest, dest
        self.dest.mkdir(parents=True, exist_ok=True)
        self.parts: list[str] = []
        self._seen: float | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(2.0):
            self.copy()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.copy()

    def copy(self) -> None:
        try:
            mtime = self.latest.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime == self._seen:
            return
        self._seen = mtime
        self.parts = split_file(self.latest, self.dest / "checkpoint.pt", PART_BYTES)


def split_file(src: Path, dst: Path, part_bytes: int) -> list[str]:
    """``src`` as ``dst.part0``, ``dst.part1``, ... of at most ``part_bytes`` (``cat`` joins them)."""
    for old in dst.parent.glob(dst.name + ".part*"):
        old.unlink()
    data = src.read_bytes()
    names = []
    for i in range(0, max(1, len(data)), part_bytes):
        part = dst.with_name(f"{dst.name}.part{i // part_bytes}")
        part.write_bytes(data[i : i + part_bytes])
        names.append(part.name)
    return names


# -- preparing the payload (here) ------------------------------------------------------------------------
def tracked_bytes() -> int:
    """The working tree that travels: tracked files plus untracked files git does not ignore."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    return sum((REPO / os.fsdecode(p)).stat().st_size for p in listing if p and (REPO / os.fsdecode(p)).is_file())


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def payload_check(carried: Path | None = None) -> dict:
    """The bytes one call would send: the working tree and ``carried`` (a part's folder)."""
    tree, part = tracked_bytes(), folder_bytes(carried) if carried is not None else 0
    total = tree + part
    return {"working_tree_bytes": tree, "carried_bytes": part, "total_bytes": total, "limit_bytes": PAYLOAD_LIMIT,
            "fits": total <= PAYLOAD_LIMIT}  # fmt: skip


def build_av_archive(wheel: Path | None) -> Path:
    """PyAV for the device's Python as an xz archive (a third smaller than its wheel), made once."""
    import zipfile

    PAYLOAD.mkdir(exist_ok=True)
    archive = PAYLOAD / "av.tar.xz"
    if archive.exists():
        return archive
    if wheel is None:
        wheels = sorted((REPO / ".whl").glob("av-*.whl"))
        if not wheels:
            raise SystemExit("no PyAV wheel: download it first (benchmarks/README.md, 'GPU campaign')")
        wheel = wheels[-1]
    unpacked = Path("/tmp/stvsr-av-wheel")
    shutil.rmtree(unpacked, ignore_errors=True)
    zipfile.ZipFile(wheel).extractall(unpacked)
    for so in unpacked.rglob("*.so*"):
        so.chmod(0o755)
    tmp = archive.with_suffix(".tmp")
    with tarfile.open(tmp, "w:xz", preset=9) as tar:
        for item in sorted(unpacked.iterdir()):
            tar.add(item, arcname=item.name)
    tmp.replace(archive)
    return archive


def prepare(
    wheel: Path | None, train_dirs: list[Path], eval_dir: Path, eval_clips: int, licence: str = "permissive",
    init_file: Path | None = None, av_archive: Path | None = None,
) -> dict:  # fmt: skip
    """Build ``.gpu-parts/1..P``, one folder per device call, and the plan: the last call carries
    PyAV, a few eval clips, the held-out clips' first ``UNSEEN_FRAMES`` frames, the weights to start
    from (``init_file``) and as much training data as fits; earlier calls carry the rest of the
    training clips (``licence``: "permissive" for permissively licensed clips alone, or "all")."""
    from stvsr_cli.evaluation import find_clips
    from stvsr_cli.training.licences import is_permissive
    from stvsr_cli.training.split import is_held_out

    archive = av_archive or build_av_archive(wheel)
    # PyAV rides with the first call (its measuring stages need it) and again with the last, so
    # that training can run even if the machine went cold between calls.
    pyav = staging.Item("av.tar.xz", str(archive), archive.stat().st_size)
    required = [pyav]
    vimeo = sorted(eval_dir.glob("vimeo_septuplet_samples__*.mkv"), key=lambda p: p.stat().st_size)
    for clip in vimeo[len(vimeo) // 2 - eval_clips // 2 :][:eval_clips]:  # middling, not the easiest
        required.append(staging.Item(f"eval/{clip.name}", str(clip), clip.stat().st_size))
    cut = PAYLOAD / "unseen"
    cut.mkdir(parents=True, exist_ok=True)
    clips = find_clips(train_dirs)
    unseen = [c for c in clips if is_held_out(c.name)]
    for clip in unseen:
        dst = cut / clip.path.name
        staging.copy_prefix(clip.path, dst, UNSEEN_FRAMES)
        required.append(staging.Item(f"unseen/{dst.name}", str(dst), dst.stat().st_size))
    if init_file is not None:
        required.append(staging.Item(f"init/{init_file.name}", str(init_file), init_file.stat().st_size))
    training, left_out = [], []
    packed_dir = PAYLOAD / "packed" / PACKING
    packed_dir.mkdir(parents=True, exist_ok=True)
    for clip in clips:
        if is_held_out(clip.name):
            continue
        if licence == "permissive" and not is_permissive(clip.name):
            left_out.append(clip.name)
            continue
        dst = packed_dir / clip.path.name
        frames = staging.pack_clip(clip.path, dst, PACKING)
        training.append(staging.Item(f"train/{dst.name}", str(dst), dst.stat().st_size, frames))
    # A seeded order, not the names': whichever parts are lost, what is left spans the sources.
    training.sort(key=lambda item: hashlib.sha256(f"stage:{item.name}".encode()).hexdigest())
    room = PAYLOAD_LIMIT - tracked_bytes() - PAYLOAD_MARGIN
    parts = staging.plan_parts(required, training, room, first=[pyav])
    extra = {
        "licence": licence, "packing": PACKING, "room_bytes": room, "val_unseen": [c.name for c in unseen],
        "val_unseen_frames": UNSEEN_FRAMES, "eval": [Path(i.name).stem for i in required if i.name.startswith("eval/")],
        "init": f"init/{init_file.name}" if init_file is not None else None, "left_out": left_out,
    }  # fmt: skip
    plan = staging.write_parts(parts, PARTS, extra)
    checks = [payload_check(PARTS / str(k)) for k in range(1, len(parts) + 1)]
    return {**{k: v for k, v in plan.items() if k != "calls"}, "calls": checks, "ready": all(c["fits"] for c in checks)}


def device_calls(parts: int, train_budget: int) -> list[dict]:
    """The device tool's calls, in order: the measuring stages with the first part, staging alone
    with the middle ones, training and the judge with the last."""
    calls = [{"carry": [".gpu-parts/1"], "timeout_s": MEASURE_BUDGET + 60,
              "command": device_command(MEASURE_BUDGET, MEASURE_STAGES)}]  # fmt: skip
    calls += [{"carry": [f".gpu-parts/{k}"], "timeout_s": 120, "command": "python3 benchmarks/gpu_campaign.py --receive"}
              for k in range(2, parts)]  # fmt: skip
    calls.append({"carry": [f".gpu-parts/{parts}"], "timeout_s": min(DEVICE_CALL_LIMIT, train_budget + 60),
                  "command": device_command(train_budget, TRAIN_STAGES)})  # fmt: skip
    return calls


def train_budget(parts: int, device_seconds: float = 900, start: float = 120, per_call: float = 25) -> int:
    """The last call's budget when the draw's ``device_seconds`` must also pay the machine's start,
    the measuring call and ``per_call`` seconds of transfer and start-up a call (at most what one
    call may run, less the grace a stopped stage gets)."""
    left = device_seconds - start - MEASURE_BUDGET - per_call * parts - 30
    return int(min(DEVICE_CALL_LIMIT - STOP_GRACE - 15, left))


def device_command(budget: int, only: tuple[str, ...] = ()) -> str:
    stages = f" --only {','.join(only)}" if only else ""
    return f"PYTHONUNBUFFERED=1 python3 benchmarks/gpu_campaign.py --out $OUT --budget {budget}{stages}"


def receive_main() -> int:
    """A staging call: gather the carried part into the store, print what is there so far."""
    report = {**staging.receive(PARTS, STORE), **staging.arrival(STORE)}
    print(json.dumps(report))
    return 0 if not report["broken"] else 1


# -- the whole campaign -----------------------------------------------------------------------------------
STAGES = ("setup", "machine", "pytest", "bench", "dcn", "frames", "probe", "train", "judge")
# The probe measured the candidates on 2026-11-30 (KNOWN_RATE); its minute now goes to "frames".
DEFAULT_STAGES = ("machine", "pytest", "bench", "dcn", "frames", "train", "judge")


def resolve_init(init: str, store: Path, plan: dict) -> str | None:
    """``--init auto``: the weights the plan carried (``prepare --init-from``), else from scratch
    when the plan's data is permissive (the shipped weights are research-only), else the shipped
    default. ``none``: from scratch. Anything else: a registered model or a file, as given."""
    if init == "auto":
        if plan.get("init"):
            return str(store / plan["init"])
        return None if plan.get("licence") == "permissive" else CONTINUE_FROM
    return None if init.lower() == "none" else init


def campaign_main(
    out: Path, dry_run: bool, budget: float, only: tuple[str, ...] = STAGES, init: str = "auto",
    rate: float | None = None, lr: float | None = None, quick: bool = False, drop_part: int | None = None,
) -> dict:  # fmt: skip
    """The stages in ``only`` (all by default; setup, with the staging, always), in order, within
    ``budget`` seconds (a dry run: each stage within DRY_BOX)."""
    campaign = Campaign(out, dry_run, budget, quick=dry_run and quick, drop_part=drop_part if dry_run else None)

    def box(stage: str) -> float:
        return time_box(stage, campaign.left(), only, dry_run)

    campaign.record["only"] = list(only)
    campaign.record["payload"] = payload_check()
    try:
        campaign.record["staging"] = stage_data(campaign)
        campaign.stage("setup", setup_environment(campaign))
        began = time.monotonic()
        if "machine" in only:
            campaign.stage("machine", {**stage_machine(campaign), "seconds": round(time.monotonic() - began, 1)})
        # Each stage's box (time_box): later stages get what earlier ones leave; training takes the rest.
        if "pytest" in only:
            campaign.stage("pytest", stage_pytest(campaign, box("pytest")))
        if "bench" in only:
            campaign.stage("bench", stage_bench(campaign, box("bench")))
        if "dcn" in only:
            campaign.stage("dcn", stage_dcn(campaign, box("dcn")))
        if "frames" in only:
            campaign.stage("frames", stage_frames(campaign, box("frames")))
        data, evaluate, unseen = training_clips(campaign)
        plan = campaign.record.get("plan", {})
        start = None if dry_run else resolve_init(init, campaign.store, plan)  # a dry run's network is tiny
        lr = lr or (CONTINUE_LR if start else None)
        campaign.record["init"] = start
        if "probe" in only:
            probe = stage_probe(campaign, box("probe"), data)
            campaign.stage("probe", probe)
            rate = next((c.get("steps_per_s") for c in probe["candidates"] if c["candidate"] == CHOSEN), rate)
        if "train" in only:
            permissive = plan.get("licence") == "permissive"
            train = stage_train(campaign, box("train"), data, unseen, evaluate, rate, start, lr, permissive)
            campaign.stage("train", train)
            if "judge" in only:
                campaign.stage("judge", stage_judge(campaign, box("judge"), train, evaluate, unseen))
    except Exception as exc:  # the record says what broke; what was measured stays
        campaign.record["error"] = f"{type(exc).__name__}: {exc}"
        campaign.log(f"campaign error: {exc!r}")
    stages = campaign.record["stages"]
    campaign.record["complete"] = all(name in stages for name in ("setup", *only))
    campaign.record["failed_stages"] = [name for name, result in stages.items() if not stage_ok(result)]
    campaign.save()
    return campaign.record


def stage_ok(result: dict) -> bool:
    """A stage's process ended by itself with 0, and no test, bench row or candidate failed."""
    if result.get("rc", 0) != 0 or result.get("timed_out") or result.get("failed"):
        return False
    rows = result.get("rows", []) + result.get("candidates", []) + result.get("models", [])
    return not any("error" in row for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="Folder for campaign.json, the log, checkpoints and weights.")
    parser.add_argument("--dry-run", action="store_true", help="Every stage on the CPU at small sizes.")
    parser.add_argument(
        "--quick", action="store_true", help="With --dry-run: the smallest sizes, in seconds (the test suite's)."
    )
    parser.add_argument("--drop-part", type=int, default=None, help="With --dry-run: the staged part that is lost.")
    parser.add_argument("--budget", type=float, default=560, help="Seconds for the whole campaign.")
    parser.add_argument("--prepare", action="store_true", help="Build .gpu-parts/ here and check each call's payload.")
    parser.add_argument("--receive", action="store_true", help="A staging call on the machine: store the carried part.")
    parser.add_argument("--wheel", type=Path, default=None, help="PyAV wheel for the device's Python (--prepare).")
    parser.add_argument(
        "--train-data", type=Path, action="append", default=None,
        help="Training folders (repeat; default: train/ and train2/ beside the checkout).",
    )  # fmt: skip
    parser.add_argument(
        "--licence", choices=("permissive", "all"), default="permissive",
        help="--prepare: carry permissively licensed training clips alone (default), or all of them.",
    )  # fmt: skip
    parser.add_argument("--init-from", type=Path, default=None, help="--prepare: weights to carry and start from.")
    parser.add_argument("--eval-data", type=Path, default=SHARED_DATA / "eval")
    parser.add_argument("--eval-clips", type=int, default=3)
    parser.add_argument(
        "--only", default=",".join(DEFAULT_STAGES),
        help=f"Stages to run, comma-separated (default: {','.join(DEFAULT_STAGES)}; known: {','.join(STAGES[1:])}).",
    )  # fmt: skip
    parser.add_argument(
        "--init", default="auto",
        help=f"Weights to train from: 'auto' (what --prepare carried; else from scratch on permissive data, "
        f"{CONTINUE_FROM} on all), 'none', a registered model or a file.",
    )  # fmt: skip
    parser.add_argument("--rate", type=float, default=None, help="Training steps/s when the probe is not run.")
    parser.add_argument("--lr", type=float, default=None, help="Training learning rate (default: 3e-4 with --init).")
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "SPEC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, spec, out = args.worker
        {"bench": worker_bench, "probe": worker_probe, "frames": worker_frames, "judge": worker_judge}[kind](spec, out)
        return 0
    if args.receive:
        return receive_main()
    if args.prepare:
        train_dirs = args.train_data or [SHARED_DATA / "train", SHARED_DATA / "train2"]
        report = prepare(args.wheel, train_dirs, args.eval_data, args.eval_clips, args.licence, args.init_from)
        print(json.dumps(report, indent=1))
        budget = train_budget(report["parts"])
        for k, call in enumerate(device_calls(report["parts"], budget), 1):
            print(f"device call {k}: run(carry={json.dumps(call['carry'])}, timeout_s={call['timeout_s']}, "
                  f'command="{call["command"]}")')  # fmt: skip
        print(f"(the last call's --budget {budget} assumes a 120 s start: make it status's budget_left_s less 60"
              " just before that call, and issue each call as soon as the one before returns: the machine"
              " goes back after 30 s idle)")  # fmt: skip
        return 0 if report["ready"] else 1
    if args.out is None:
        parser.error("--out is required")
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = set(only) - set(STAGES)
    if unknown:
        parser.error(f"unknown stages: {', '.join(sorted(unknown))} (known: {', '.join(STAGES[1:])})")
    rate = args.rate or (None if args.dry_run else KNOWN_RATE)
    if (args.quick or args.drop_part) and not args.dry_run:
        parser.error("--quick and --drop-part shape a dry run: give --dry-run too")
    record = campaign_main(args.out, args.dry_run, args.budget, only, args.init, rate, args.lr, args.quick,
                           args.drop_part)  # fmt: skip
    summary = {k: record.get(k) for k in ("complete", "failed_stages", "error")}
    print(json.dumps({**summary, "out": str(args.out)}))
    return 0 if record["complete"] and not record["failed_stages"] and not record.get("error") else 1


if __name__ == "__main__":
    sys.exit(main())
