"""Weights: find, download, verify, convert and cache them. Nothing unverified is ever loaded.

Sources (a registry entry's ``weights``):
- ``hf://OWNER/REPO/PATH/FILE@REVISION``: through ``huggingface_hub.hf_hub_download``, pinned;
- ``https://...``: a streamed download that resumes a partial file;
- a local path (already resolved against the registry file that named it).

Every download is checked against the entry's ``sha256`` (or ``git_blob_sha1``, for authors who
publish only a git blob id); a mismatch deletes it. Checkpoints in PyTorch's format are read only
with ``torch.load(weights_only=True)`` and stored converted, as safetensors, in the cache:

    $STVSR_CACHE (default: the platform cache folder)/
        hf/                     huggingface_hub's own cache
        downloads/ID.part       an https download in progress (resumed on the next try)
        weights/NAME-ID.safetensors (+ .sha256)   verified, converted, ready to load
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from stvsr_cli.errors import StvsrError

if TYPE_CHECKING:  # hub sits below models: it is handed specs, never imports them
    import torch

    from stvsr_cli.models.registry import ModelSpec

Progress = Callable[[int, int | None], None]  # (bytes done, bytes in all or None)

CACHE_ENV = "STVSR_CACHE"
OFFLINE_ENV = "HF_HUB_OFFLINE"
_CHUNK = 1 << 20


class WeightsError(StvsrError):
    """Weights that cannot be found, fetched, verified or read."""


def cache_dir() -> Path:
    """``$STVSR_CACHE``, else the platform's cache folder for stvsr."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "stvsr" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "stvsr"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stvsr"


def offline_by_default() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


# -- hashes ---------------------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The id git gives the file's contents: SHA-1 of ``b"blob <size>\\0"`` + the bytes."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def source_id(spec: ModelSpec) -> str | None:
    """The pinned identity of a model's weights file: its sha256, or its git blob id."""
    return spec.sha256 or spec.git_blob_sha1


def check_source_hash(spec: ModelSpec, path: Path) -> None:
    """Raise unless ``path`` is the file the registry pins (when it pins one)."""
    if spec.sha256:
        found, kind, expected = file_sha256(path), "sha256", spec.sha256
    elif spec.git_blob_sha1:
        found, kind, expected = git_blob_sha1(path), "git blob id", spec.git_blob_sha1
    else:
        return
    if found.lower() != expected.lower():
        raise WeightsError(
            f"{path.name} is not the weights file of model '{spec.name}': {kind} {found[:12]}..., "
            f"expected {expected[:12]}..."
        )


# -- reading and converting ---------------------------------------------------------------------------
def is_pytorch_checkpoint(path: Path) -> bool:
    """PyTorch checkpoints are zip archives (or, from before 1.6, bare pickles)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, or of a PyTorch checkpoint read without running its code."""
    if not path.is_file():
        raise WeightsError(f"weights file {path} not found")
    if not is_pytorch_checkpoint(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise WeightsError(f"cannot read weights file {path}: {exc}") from None
    try:
        import torch  # only where a network is loaded: a classic run never imports it

        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle refusing code, truncated zip, not a checkpoint at all
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"cannot read {path} as PyTorch weights (only plain tensors are accepted): {reason}"
        ) from None
    return unwrap_checkpoint(checkpoint, path)


# Metadata of the safetensors files stvsr writes: enough to rebuild the network (`--weights FILE`).
META_ARCH, META_PARAMS = "stvsr.arch", "stvsr.params"
META_LINEAGE = "stvsr.lineage"  # the training clips' sources, of this run and the weights it started from


def architecture_metadata(arch: str, params: Mapping, lineage: Sequence[str] = ()) -> dict[str, str]:
    meta = {META_ARCH: arch, META_PARAMS: json.dumps(dict(params), sort_keys=True)}
    if lineage:
        meta[META_LINEAGE] = json.dumps(sorted(lineage))
    return meta


def _safetensors_metadata(path: Path) -> dict[str, str]:
    if is_pytorch_checkpoint(path):
        return {}
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError):
        return {}


def read_lineage(path: Path) -> tuple[str, ...] | None:
    """The training clips' sources recorded in a safetensors file by ``stvsr train``, if any."""
    try:
        return tuple(json.loads(_safetensors_metadata(path)[META_LINEAGE]))
    except (KeyError, json.JSONDecodeError, TypeError):
        return None


def read_architecture(path: Path) -> tuple[str, dict] | None:
    """(arch, params) recorded in a safetensors file by ``stvsr train``, if any."""
    meta = _safetensors_metadata(path)
    if META_ARCH not in meta:
        return None
    try:
        return meta[META_ARCH], json.loads(meta.get(META_PARAMS, "{}"))
    except json.JSONDecodeError:
        return None


def unwrap_checkpoint(checkpoint: object, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside the wrappers training scripts add (``params_ema``, ``module.``...)."""
    import torch

    for key in ("params_ema", "params", "state_dict", "model"):
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    if not isinstance(checkpoint, Mapping) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise WeightsError(f"{path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in checkpoint.items()}


def check_fits(spec: ModelSpec, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Raise unless ``state`` loads strictly into the spec's architecture."""
    load_strict(spec.build(), state, spec, path)


def load_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], spec: ModelSpec, path: Path) -> None:
    """``model.load_state_dict(state, strict=True)``, failing with one line that names the file."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise WeightsError(f"{path.name} does not fit model '{spec.name}' (arch {spec.arch}): {detail}") from None


# -- the cache ----------------------------------------------------------------------------------------
def cached_path(spec: ModelSpec) -> Path | None:
    """Where the verified, converted weights of a downloaded model live (None for local ones)."""
    ident = source_id(spec)
    if spec.weights is None or "://" not in spec.weights or ident is None:
        return None
    return cache_dir() / "weights" / f"{spec.name}-{ident[:16]}.safetensors"


def store_converted(spec: ModelSpec, source: Path) -> Path:
    """Verify ``source`` against the registry, convert it to safetensors, write it into the cache."""
    from safetensors.torch import save_file

    check_source_hash(spec, source)
    state = read_state_dict(source)
    check_fits(spec, state, source)
    target = cached_path(spec)
    if target is None:
        raise WeightsError(f"model '{spec.name}' has no downloadable weights to import")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    try:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"source": spec.weights or ""})
        Path(f"{tmp}.sha256").write_text(file_sha256(tmp) + "\n")
        os.replace(f"{tmp}.sha256", f"{target}.sha256")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}.sha256").unlink(missing_ok=True)
    return target


def available(spec: ModelSpec) -> bool:
    """Whether the model can run without a download."""
    if spec.weights is None:
        return True
    target = cached_path(spec)
    return target.is_file() if target is not None else Path(spec.weights).is_file()


def verify_cached(path: Path) -> bool:
    """Whether a cached converted file still has the bytes it was written with."""
    sidecar = Path(f"{path}.sha256")
    return path.is_file() and sidecar.is_file() and file_sha256(path) == sidecar.read_text().strip()


# -- downloading ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HubFile:
    repo_id: str
    filename: str
    revision: str


def parse_hf(uri: str) -> HubFile:
    """``hf://OWNER/REPO/PATH/FILE@REVISION``."""
    body, _, revision = uri.removeprefix("hf://").rpartition("@")
    parts = body.split("/")
    if not revision or len(parts) < 3 or not all(parts):
        raise WeightsError(f"bad hub address '{uri}'", "expected hf://OWNER/REPO/PATH/FILE@REVISION")
    return HubFile("/".join(parts[:2]), "/".join(parts[2:]), revision)


def download(spec: ModelSpec, progress: Progress | None = None) -> Path:
    """Fetch a model's source file (not yet verified)."""
    assert spec.weights is not None
    if spec.weights.startswith("hf://"):
        return _download_hf(spec, parse_hf(spec.weights))
    if spec.weights.startswith(("https://", "http://")):
        ident = source_id(spec) or hashlib.sha256(spec.weights.encode()).hexdigest()
        suffix = Path(spec.weights.split("?")[0]).suffix or ".bin"
        return _download_url(spec.weights, cache_dir() / "downloads" / f"{ident[:16]}{suffix}", progress)
    raise WeightsError(f"unsupported weights address '{spec.weights}'", "use hf://, https:// or a local file")


def _download_hf(spec: ModelSpec, file: HubFile) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(
            hf_hub_download(
                file.repo_id,
                file.filename,
                revision=file.revision,
                cache_dir=cache_dir() / "hf",
                endpoint=os.environ.get("HF_ENDPOINT") or None,
            )
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"cannot download the weights of model '{spec.name}' from the hub: {reason}") from None


def _download_url(url: str, target: Path, progress: Progress | None) -> Path:
    """Stream ``url`` into ``target``, resuming ``target.part`` when a previous try was cut short."""
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            if have and response.status != 206:
                have = 0  # the server ignored the range: start over
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            done = have
            with open(part, "ab" if have else "wb") as out:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc or type(exc).__name__
        raise WeightsError(
            f"cannot download {url}: {reason}", "run the same command again to resume, or use `stvsr weights import`"
        ) from None
    if total is not None and done < total:
        raise WeightsError(
            f"download of {url} was cut short ({done} of {total} bytes)", "run the same command again to resume"
        )
    os.replace(part, target)
    return target


def _discard_download(path: Path) -> None:
    """Remove a downloaded file, and the blob behind it when huggingface_hub linked it."""
    real = path.resolve()
    path.unlink(missing_ok=True)
    if real != path:
        real.unlink(missing_ok=True)


# -- the one door ----------------------------------------------------------------------------------
def weights_file(spec: ModelSpec, *, offline: bool | None = None, progress: Progress | None = None) -> Path:
    """A verified safetensors file with ``spec``'s weights, downloading and converting on first use."""
    if spec.weights is None:
        raise WeightsError(f"model '{spec.name}' has no weights")
    if "://" not in spec.weights:  # shipped with the package or named by a user registry
        path = Path(spec.weights)
        if not path.is_file():
            raise WeightsError(f"weights file {path} of model '{spec.name}' is missing")
        check_source_hash(spec, path)
        if path.suffix != ".safetensors":
            raise WeightsError(
                f"local weights of model '{spec.name}' must be safetensors", "convert with `stvsr weights import`"
            )
        return path
    target = cached_path(spec)
    assert target is not None  # the registry requires a hash for downloads
    if target.is_file():
        if verify_cached(target):
            return target
        target.unlink()  # damaged since it was written: fetch it again
    if offline if offline is not None else offline_by_default():
        raise WeightsError(
            f"the weights of model '{spec.name}' are not in the cache and downloads are off (offline)",
            f"fetch {spec.weights} elsewhere and run `stvsr weights import {spec.name} FILE`",
        )
    source = download(spec, progress)
    try:
        return store_converted(spec, source)
    except WeightsError:
        _discard_download(source)  # a wrong or unreadable download is never kept
        raise
    finally:
        if source.parent == cache_dir() / "downloads":
            source.unlink(missing_ok=True)  # converted: the original is not needed any more


def import_weights(spec: ModelSpec, file: Path | str) -> Path:
    """Bring a local copy of a model's registered weights into the cache (checked, converted)."""
    path = Path(file)
    if not path.is_file():
        raise WeightsError(f"weights file {path} not found")
    if cached_path(spec) is None:
        raise WeightsError(
            f"model '{spec.name}' has no registered download to import",
            "a model with local weights reads them where its registry names them",
        )
    return store_converted(spec, path)


def local_path(spec: ModelSpec) -> Path:
    """Where the model's ready-to-load weights are; an error if they are not there."""
    if spec.weights is None:
        raise WeightsError(f"model '{spec.name}' " + ("has no weights" if spec.architecture.learned else "needs no weights"))
    path = cached_path(spec) or Path(spec.weights)
    if not path.is_file():
        raise WeightsError(
            f"the weights of model '{spec.name}' are not here yet", f"run `stvsr weights download {spec.name}`"
        )
    return path


def verify(spec: ModelSpec) -> str:
    """One word (and a detail) on the state of a model's weights: none needed, ok, not downloaded, damaged."""
    if spec.weights is None:
        return "none needed"
    target = cached_path(spec)
    if target is not None:
        if not target.is_file():
            return "not downloaded"
        return (
            f"ok ({target})"
            if verify_cached(target)
            else f"damaged ({target}): run `stvsr weights download {spec.name}`"
        )
    path = Path(spec.weights)
    if not path.is_file():
        return f"missing ({path})"
    try:
        check_source_hash(spec, path)
    except WeightsError as exc:
        return f"damaged ({path}): {exc.message}"
    return f"ok ({path})"
