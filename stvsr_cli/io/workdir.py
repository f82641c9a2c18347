"""The work folder of a run: finished output segments and a manifest, so that a run resumes.

``.OUT.stvsr-work/`` beside the output holds one file of encoded video packets per finished
segment and ``manifest.json``: what the input was (size, modification time, a hash of its first
MiB), every option that shapes the output, and the segments done, in order. A segment file is
written under a temporary name, synced and renamed before the manifest names it, so the manifest
never lists a half-written segment, whatever stops the run (Ctrl-C, SIGKILL, power loss, a full
disk). The folder goes once the output is in place.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import struct
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stvsr_cli.errors import OutputError
from stvsr_cli.io.encode import EncodedPacket

UNWRITABLE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS}

MANIFEST_VERSION = 1
_MAGIC = b"STVSR-SEGMENT-1\n"
_RECORD = struct.Struct("<qqBI")  # pts, dts, keyframe, size; then the packet's bytes


@dataclass(frozen=True)
class Segment:
    file: str
    windows: int  # model windows whose output frames it holds
    frames: int  # output frames


def work_folder_for(dst: Path) -> Path:
    return dst.parent / f".{dst.name}.stvsr-work"


def input_identity(path: Path) -> dict[str, Any]:
    """What tells a changed input apart: size, modification time and the hash of its first MiB."""
    stat = path.stat()
    with open(path, "rb") as f:
        head = hashlib.sha256(f.read(1 << 20)).hexdigest()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "head_sha256": head}


class WorkFolder:
    """The segments of one output, and whether an earlier run of the same job left some."""

    def __init__(self, dst: Path, job: dict[str, Any]) -> None:
        self.path = work_folder_for(Path(dst))
        self.job = job  # input identity and options, JSON-able
        self.segments: list[Segment] = []
        self.extradata: bytes | None = None
        self.cuts: list[int] | None = None  # the scene cuts found for this job, once known
        self.repeats: list[int] | None = None  # the frames found to repeat the previous one, when looked for
        self.grey_shots: list[int] | None = None  # the first frames of the black-and-white shots, once known
        self.cadence: dict | None = None  # what the telecine check found (``pipeline.telecine.Cadence``)
        self.grain: dict | None = None  # each shot's grain, by its first frame (``pipeline.grain.GrainProfile``)

    @classmethod
    def open(cls, dst: Path, job: dict[str, Any], *, restart: bool = False) -> tuple[WorkFolder, str | None]:
        """The work folder for ``dst``: resumed when it holds segments of this same job, else new.
        Also returns a line for the user when earlier work is resumed or discarded."""
        work = cls(dst, job)
        note = None
        manifest = work.path / "manifest.json"
        if work.path.exists():
            previous = _read_json(manifest)
            if restart:
                note = "--restart: discarded the earlier run's segments"
                work.discard()
            elif previous is None or previous.get("version") != MANIFEST_VERSION:
                work.discard()
            elif previous.get("job") != _normalized(job):
                changed = (
                    "the input" if previous.get("job", {}).get("input") != _normalized(job)["input"] else "the options"
                )
                note = f"{changed} changed since the interrupted run: starting afresh"
                work.discard()
            else:
                work.segments = [Segment(**s) for s in previous["segments"]]
                work.extradata = bytes.fromhex(previous["extradata"]) if previous.get("extradata") else None
                work.cuts = previous.get("cuts")
                work.repeats = previous.get("repeats")
                work.grey_shots = previous.get("grey_shots")
                work.cadence = previous.get("cadence")
                work.grain = previous.get("grain")
                if work.segments:
                    note = (
                        f"resuming: {len(work.segments)} finished segment(s), {work.done_frames} frames, "
                        f"kept from the interrupted run"
                    )
        try:
            work.path.mkdir(parents=True, exist_ok=True)
            for stale in work.path.glob("*.partial"):
                stale.unlink()  # a segment the interrupted run was writing
            work._save()
        except BaseException as exc:
            if not work.segments:
                work.discard()  # a fresh folder, interrupted while being made: nothing to keep
            if isinstance(exc, OSError) and exc.errno in UNWRITABLE_ERRNOS:
                raise OutputError(
                    f"cannot write in '{work.path.parent}': {(exc.strerror or str(exc)).lower()}",
                    "choose an output folder you can write to",
                ) from None
            raise
        return work, note

    @staticmethod
    def recorded_cadence(dst: Path, job: dict[str, Any]) -> dict | None:
        """The telecine check an interrupted run of this same job recorded, read before the run is
        set up (the check decides the frame rate the rest depends on); None if there is none."""
        previous = _read_json(work_folder_for(Path(dst)) / "manifest.json")
        if previous is None or previous.get("version") != MANIFEST_VERSION:
            return None
        recorded, asked = previous.get("job", {}), _normalized(job)
        same = recorded.get("input") == asked["input"] and all(
            recorded.get("options", {}).get(key) == value for key, value in asked["options"].items()
        )
        return previous.get("cadence") if same else None

    @property
    def done_windows(self) -> int:
        return sum(s.windows for s in self.segments)

    @property
    def done_frames(self) -> int:
        return sum(s.frames for s in self.segments)

    def add_segment(
        self, packets: Iterable[EncodedPacket], *, windows: int, frames: int, extradata: bytes | None
    ) -> None:
        """Write a finished segment, then record it in the manifest (in that order)."""
        name = f"segment-{len(self.segments):06d}.bin"
        final = self.path / name
        partial = self.path / (name + ".partial")
        try:
            with open(partial, "wb") as f:
                f.write(_MAGIC)
                for p in packets:
                    f.write(_RECORD.pack(p.pts, p.dts, int(p.keyframe), len(p.data)))
                    f.write(p.data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, final)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        if self.extradata is None:
            self.extradata = extradata
        self.segments.append(Segment(name, windows, frames))
        self._save()

    def set_scan(self, cuts: list[int], repeats: list[int] | None, grey_shots: list[int]) -> None:
        """What the scan of the input found, kept so that a resumed run need not scan again."""
        self.cuts = list(cuts)
        self.repeats = None if repeats is None else list(repeats)
        self.grey_shots = list(grey_shots)
        self._save()

    def set_cadence(self, cadence: dict | None) -> None:
        self.cadence = cadence
        self._save()

    def set_grain(self, grain: dict) -> None:
        self.grain = grain
        self._save()

    def packets(self, segment: Segment) -> Iterator[EncodedPacket]:
        with open(self.path / segment.file, "rb") as f:
            if f.read(len(_MAGIC)) != _MAGIC:
                raise ValueError(f"{segment.file} is not a segment file")
            while header := f.read(_RECORD.size):
                pts, dts, key, size = _RECORD.unpack(header)
                yield EncodedPacket(f.read(size), pts, dts, bool(key))

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.segments = []
        self.extradata = None
        self.cuts = None
        self.repeats = None
        self.grey_shots = None
        self.cadence = None
        self.grain = None

    def _save(self) -> None:
        manifest = {
            "version": MANIFEST_VERSION,
            "job": _normalized(self.job),
            "extradata": self.extradata.hex() if self.extradata else None,
            "cuts": self.cuts,
            "repeats": self.repeats,
            "grey_shots": self.grey_shots,
            "cadence": self.cadence,
            "grain": self.grain,
            "segments": [asdict(s) for s in self.segments],
        }
        tmp = self.path / "manifest.json.partial"
        with open(tmp, "w") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path / "manifest.json")


def _normalized(job: dict[str, Any]) -> dict[str, Any]:
    """The job as it reads back from JSON (tuples become lists, everything else a string)."""
    return json.loads(json.dumps(job, default=str))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
