"""Batches: every video under a folder, upscaled into a mirrored tree, one file's failure never
stopping the rest.

The plan is pure (``find_inputs``, ``shard``, ``plan_batch``); ``run_file`` does one file and never
raises for a bad file; ``run_batch`` runs a plan in this process or in a pool of processes (one per
GPU), ``run_batch_ray`` as Ray tasks on a cluster, and ``run`` picks between them as ``stvsr batch``
asks. Outputs are written atomically by ``upscale``, so an existing output is a finished one and a
re-run skips it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from stvsr_cli.errors import StvsrError, UsageError
from stvsr_cli.models.registry import load_registry
from stvsr_cli.options import UpscaleOptions

DEFAULT_PATTERNS = tuple(
    f"*.{ext}" for ext in ("mp4", "mkv", "mov", "avi", "webm", "m4v", "mpg", "mpeg", "ts", "m2ts", "wmv", "flv")
)

FileProgress = Callable[[str, int, int], None]  # (relative path, frames done, frames in all)


@dataclass(frozen=True)
class BatchFile:
    """One input of a batch and where its output goes."""

    relative: str  # POSIX path under the input folder: the file's identity in reports and shards
    input: Path
    output: Path


@dataclass
class FileResult:
    input: str
    output: str
    status: str  # done, skipped, failed
    error: str | None = None
    seconds: float = 0.0
    frames: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BatchPlan:
    files: tuple[BatchFile, ...]  # this shard's files, sorted by relative path
    ignored: int  # files under the input folder that match no pattern (not videos)
    total: int  # video files under the input folder, before sharding


def find_inputs(
    in_dir: Path, patterns: Sequence[str] = DEFAULT_PATTERNS, exclude: Path | None = None
) -> tuple[list[str], int]:
    """Relative POSIX paths of the files under ``in_dir`` matching a pattern (case-insensitive),
    sorted, and the number of other files. Hidden files and folders, and ``exclude``, are left out."""
    matched, ignored = [], 0
    exclude = exclude.resolve() if exclude is not None else None
    for root, dirs, names in os.walk(in_dir):
        root_path = Path(root)
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and (exclude is None or (root_path / d).resolve() != exclude)
        )
        for name in names:
            if name.startswith("."):
                continue
            relative = (root_path / name).relative_to(in_dir).as_posix()
            if any(
                fnmatch.fnmatch(name.lower(), p.lower()) or fnmatch.fnmatch(relative.lower(), p.lower())
                for p in patterns
            ):
                matched.append(relative)
            else:
                ignored += 1
    return sorted(matched), ignored


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` (1 <= K <= N) -> (K, N)."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard '{text}' is not K/N, such as 2/8") from None
    if not 1 <= k <= n:
        raise UsageError(f"--shard {text}: K must be between 1 and N")
    return k, n


def shard(relatives: Sequence[str], k: int, n: int) -> list[str]:
    """Shard ``k`` of ``n`` (from 1): every n-th file of the sorted list, starting at the k-th.
    The N shards partition the files exactly, and a shard depends only on the file list."""
    return sorted(relatives)[k - 1 :: n]


def output_path(out_dir: Path, relative: str, ext: str | None) -> Path:
    target = out_dir / relative
    if ext:
        target = target.with_suffix("." + ext.lstrip("."))
    return target


def plan_batch(
    in_dir: Path | str,
    out_dir: Path | str,
    *,
    patterns: Sequence[str] = DEFAULT_PATTERNS,
    ext: str | None = None,
    shard_spec: tuple[int, int] | None = None,
) -> BatchPlan:
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not in_dir.is_dir():
        raise UsageError(f"input folder '{in_dir}' not found" if not in_dir.exists() else f"'{in_dir}' is not a folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"output '{out_dir}' is not a folder")
    if out_dir.resolve() == in_dir.resolve() and not ext:
        raise UsageError(
            "the output folder is the input folder", "choose another folder, or --ext to change the container"
        )
    relatives, ignored = find_inputs(in_dir, patterns, exclude=out_dir)
    chosen = shard(relatives, *shard_spec) if shard_spec else relatives
    files = tuple(BatchFile(r, in_dir / r, output_path(out_dir, r, ext)) for r in chosen)
    return BatchPlan(files, ignored, len(relatives))


def open_batch(
    in_dir: Path, out_dir: Path, *, patterns: Sequence[str] = DEFAULT_PATTERNS, ext: str | None, shard_text: str | None
) -> BatchPlan:
    """The plan for ``stvsr batch`` (``shard_text`` is its ``K/N``), with the output folder made."""
    plan = plan_batch(
        in_dir, out_dir, patterns=patterns, ext=ext, shard_spec=parse_shard(shard_text) if shard_text else None
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    return plan


def forecasts(plan: BatchPlan, options: UpscaleOptions) -> list:
    """``--plan`` for every file of ``plan`` whose output does not exist yet."""
    from stvsr_cli.forecast import forecast

    return [forecast(item.input, item.output, options) for item in plan.files if not item.output.exists()]


def license_note(options: UpscaleOptions) -> str | None:
    """The line for a batch whose model's weights are for research only (said once, not per file)."""
    registry = load_registry()
    return registry.get(options.model or registry.default).license_note()


def run_file(item: BatchFile, options: UpscaleOptions, progress: FileProgress | None = None) -> FileResult:
    """Upscale one file with ``options``; every failure becomes a result."""
    from stvsr_cli.api import upscale

    result = FileResult(str(item.input), str(item.output), "done")
    if item.output.exists():
        result.status = "skipped"
        return result
    began = time.perf_counter()
    report = (lambda done, total: progress(item.relative, done, total)) if progress is not None else None
    try:
        item.output.parent.mkdir(parents=True, exist_ok=True)
        done = upscale(item.input, item.output, options, progress=report)
    except StvsrError as exc:
        result.status, result.error = "failed", exc.one_line()
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a bug or an unforeseen library error: still only this file fails
        result.status, result.error = "failed", f"unexpected {type(exc).__name__}: {exc}"
    else:
        result.frames, result.warnings = done.frames_out, list(done.warnings)
    result.seconds = round(time.perf_counter() - began, 3)
    return result


def summarize(plan: BatchPlan, results: Iterable[FileResult]) -> dict[str, Any]:
    results = list(results)
    count = {status: sum(r.status == status for r in results) for status in ("done", "skipped", "failed")}
    return {
        **count,
        "files": len(plan.files),
        "videos_found": plan.total,
        "ignored_not_videos": plan.ignored,
        "not_run": len(plan.files) - len(results),
        "frames": sum(r.frames for r in results),
        "seconds": round(sum(r.seconds for r in results), 3),
    }


def write_report(path: Path | str, plan: BatchPlan, results: Iterable[FileResult]) -> None:
    """The JSON report, written atomically (a crash never leaves half a report)."""
    results = list(results)
    report = {"files": [asdict(r) for r in results], "summary": summarize(plan, results)}
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, path)


# -- running --------------------------------------------------------------------------------------


def run(
    plan: BatchPlan,
    options: UpscaleOptions,
    *,
    jobs: int | None = None,
    ray_address: str | None = None,
    ray_gpus: float | None = None,
    on_start: Callable[[BatchFile], None] | None = None,
    on_result: Callable[[BatchFile, FileResult], None] | None = None,
    progress: FileProgress | None = None,
) -> list[FileResult]:
    """Run ``plan`` as ``stvsr batch`` does: as Ray tasks when ``ray_address`` is given ("local" for
    a cluster started here), else ``jobs`` files at once (default: one per GPU when there are
    several, each worker on its own GPU, else one). Ctrl-C keeps the files already finished."""
    try:
        if ray_address is not None:
            address = None if ray_address == "local" else ray_address
            return run_batch_ray(plan, options, address=address, gpus_per_task=ray_gpus, on_result=on_result)
        if options.half:  # refused once here rather than once per file (Ray's workers may have GPUs)
            from stvsr_cli.models.loader import refuse_half_off_cuda, resolve_device

            refuse_half_off_cuda(True, resolve_device(options.device))
        devices = _spread_devices(options.device)
        return run_batch(
            plan, options, jobs=jobs or len(devices) or 1, devices=devices or None, on_start=on_start,
            on_result=on_result, progress=progress,
        )  # fmt: skip
    except KeyboardInterrupt:
        raise KeyboardInterrupt("interrupted; finished files are kept: run the same command again to go on") from None


def _spread_devices(device: str) -> list[str]:
    """The GPUs to spread files over: every CUDA GPU when ``device`` lets us choose and there are
    several; none (every file on ``device``) otherwise."""
    if device not in ("auto", "cuda"):
        return []
    from stvsr_cli.models.loader import cuda_devices

    devices = cuda_devices()
    return devices if len(devices) >= 2 else []


def run_batch(
    plan: BatchPlan,
    options: UpscaleOptions,
    *,
    jobs: int = 1,
    devices: Sequence[str] | None = None,
    on_result: Callable[[BatchFile, FileResult], None] | None = None,
    on_start: Callable[[BatchFile], None] | None = None,
    progress: FileProgress | None = None,
) -> list[FileResult]:
    """Run every file of ``plan``; ``jobs`` files at once in worker processes, worker i using
    ``devices[i % len(devices)]`` when given. Results come in plan order."""
    todo = list(plan.files)
    if jobs <= 1 or len(todo) <= 1:
        results = []
        for item in todo:
            if on_start is not None:
                on_start(item)
            opts = replace(options, device=devices[0]) if devices else options
            result = run_file(item, opts, progress)
            results.append(result)
            if on_result is not None:
                on_result(item, result)
        return results
    return _run_pool(todo, options, jobs, devices, on_start, on_result, progress)


def _run_pool(todo, options, jobs, devices, on_start, on_result, progress) -> list[FileResult]:
    import multiprocessing
    import queue as queue_module
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")  # torch and decoder threads do not survive fork
    manager = context.Manager()
    messages = manager.Queue()
    slots = manager.Queue()
    for i in range(jobs):
        slots.put(devices[i % len(devices)] if devices else None)
    results: dict[str, FileResult] = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {}
        for item in todo:
            futures[pool.submit(_pool_task, item, options, slots, messages)] = item
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(messages, todo, on_start, progress, queue_module)
            for future in finished:
                item = futures[future]
                try:
                    result = future.result()
                except Exception as exc:  # the worker process died (e.g. killed for memory)
                    result = FileResult(str(item.input), str(item.output), "failed", f"worker died: {exc}")
                results[item.relative] = result
                if on_result is not None:
                    on_result(item, result)
        _drain(messages, todo, on_start, progress, queue_module)
    manager.shutdown()
    return [results[item.relative] for item in todo]


def _drain(messages, todo, on_start, progress, queue_module) -> None:
    by_name = {item.relative: item for item in todo}
    while True:
        try:
            kind, name, done, total = messages.get_nowait()
        except queue_module.Empty:
            return
        if kind == "start" and on_start is not None:
            on_start(by_name[name])
        elif kind == "progress" and progress is not None:
            progress(name, done, total)


def _pool_task(item: BatchFile, options: UpscaleOptions, slots, messages) -> FileResult:
    device = slots.get()  # one device per running task
    try:
        messages.put(("start", item.relative, 0, 0))
        opts = replace(options, device=device) if device else options
        return run_file(item, opts, lambda name, done, total: messages.put(("progress", name, done, total)))
    finally:
        slots.put(device)


def run_batch_ray(
    plan: BatchPlan,
    options: UpscaleOptions,
    *,
    address: str | None = None,
    gpus_per_task: float | None = None,
    on_result: Callable[[BatchFile, FileResult], None] | None = None,
    init_options: dict[str, Any] | None = None,
) -> list[FileResult]:
    """Run every file of ``plan`` as a Ray task: on the cluster at ``address``, or on a local one
    started here. Each task asks for ``gpus_per_task`` GPUs (default 1 when the cluster has GPUs)."""
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray", "pip install 'stvsr[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, **(init_options or {}))
    try:
        has_gpus = ray.cluster_resources().get("GPU", 0) > 0
        gpus = gpus_per_task if gpus_per_task is not None else (1 if has_gpus else 0)
        task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(_ray_task)
        refs = {task.remote(item, options): item for item in plan.files}
        results: dict[str, FileResult] = {}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            item = refs[ready[0]]
            try:
                result = ray.get(ready[0])
            except Exception as exc:  # the task's worker died
                result = FileResult(str(item.input), str(item.output), "failed", f"Ray task failed: {exc}")
            results[item.relative] = result
            if on_result is not None:
                on_result(item, result)
        return [results[item.relative] for item in plan.files]
    finally:
        if started_here:
            ray.shutdown()


def _ray_task(item: BatchFile, options: UpscaleOptions) -> FileResult:
    return run_file(item, options)
