"""Getting the training data onto a lent GPU machine: packed compactly, staged in parts.

One call to the device carries at most 64 MiB, the working tree included (about 28 MiB of it is the
shipped weights), so the data travels in parts over back-to-back calls while the machine is warm:
each call carries one folder ``.gpu-parts/K`` (an ignored path, named in the call's ``carry``); the
campaign's first step on the machine checks every file of it against the part's manifest (size and
SHA-256) and moves it into ``.gpu-store``, an ignored folder that no call carries, which the machine
keeps between calls while it stays warm. The last call carries what training cannot do without
(PyAV for the machine's Python, the eval and held-out clips, and as much training data as fits), so
that a machine that went cold between calls, or a part that broke off, costs only the training data
it held; ``arrival`` tells which parts made it, and the training reads whatever did.

Packing (``pack_clip``, ``copy_prefix``) needs PyAV; the plan, the parts and their receipt are plain
file work, testable without a GPU and run before a bare machine has PyAV.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

# How a training clip is re-encoded for travel: (encoder, pixel format, options). The originals are
# H.264 4:4:4 at CRF 18; benchmarks/pack_clips.py measured these against them (the chosen one is
# ``gpu_campaign.PACKING``).
SETTINGS: dict[str, tuple[str, str, dict[str, str]]] = {
    "h264-420-crf18": ("libx264", "yuv420p", {"crf": "18", "preset": "slow"}),
    "hevc-444-crf16": ("libx265", "yuv444p", {"crf": "16", "preset": "medium", "x265-params": "log-level=error"}),
    "hevc-444-crf20": ("libx265", "yuv444p", {"crf": "20", "preset": "medium", "x265-params": "log-level=error"}),
    "hevc-420-crf20": ("libx265", "yuv420p", {"crf": "20", "preset": "medium", "x265-params": "log-level=error"}),
    "av1-420-crf22": ("libsvtav1", "yuv420p", {"crf": "22", "preset": "6"}),
    "av1-420-crf30": ("libsvtav1", "yuv420p", {"crf": "30", "preset": "6"}),
}
COPY = "copy"  # packets copied as they are (the originals' bytes)


def pack_clip(src: Path, dst: Path, setting: str, frames: int | None = None) -> int:
    """``src`` (its first ``frames`` frames, else all) into ``dst`` re-encoded with ``SETTINGS[setting]``
    (or copied, ``"copy"``: the file, or a prefix of whole frames, ``copy_prefix``), keeping its frame
    rate and colour description. Returns the frames written."""
    import av

    if setting == COPY:
        if frames is not None:
            return copy_prefix(src, dst, frames)
        tmp = dst.with_name(dst.name + ".tmp" + dst.suffix)
        shutil.copyfile(src, tmp)
        tmp.replace(dst)
        return frame_count(dst)
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only, not its banner per clip
    tmp = dst.with_name(dst.name + ".tmp" + dst.suffix)
    count = 0
    codec, pix_fmt, options = SETTINGS[setting]
    with av.open(str(src)) as inp, av.open(str(tmp), "w") as out:
        stream = inp.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        ostream = out.add_stream(codec, rate=rate)
        ostream.width, ostream.height, ostream.pix_fmt = stream.width, stream.height, pix_fmt
        ostream.options = dict(options)
        src_ctx, ctx = stream.codec_context, ostream.codec_context
        for attr in ("colorspace", "color_range", "color_primaries", "color_trc"):
            setattr(ctx, attr, getattr(src_ctx, attr))
        for frame in inp.decode(stream):
            if frames is not None and count >= frames:
                break
            picture = frame.reformat(format=pix_fmt) if frame.format.name != pix_fmt else frame
            picture.pts, picture.time_base = count, Fraction(1) / rate
            out.mux(ostream.encode(picture))
            count += 1
        out.mux(ostream.encode(None))
    tmp.replace(dst)
    return count


def frame_count(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return container.streams.video[0].frames or sum(1 for _ in container.demux(video=0))


def copy_prefix(src: Path, dst: Path, frames: int) -> int:
    """The first ``frames`` or so frames of ``src`` into ``dst`` without re-encoding: packets in
    decode order until at least ``frames`` are in and every frame before the last one is present
    (B-frames arrive after the frames they precede). Returns the frames kept."""
    import av

    tmp = dst.with_suffix(".tmp" + dst.suffix)
    with av.open(str(src)) as inp, av.open(str(tmp), "w") as out:
        stream = inp.streams.video[0]
        ostream = out.add_stream_from_template(stream)
        step = Fraction(1) / (stream.average_rate or stream.guessed_rate) / stream.time_base
        first_pts, seen = None, set()
        for packet in inp.demux(stream):
            if packet.pts is None:
                continue
            first_pts = packet.pts if first_pts is None else min(first_pts, packet.pts)
            seen.add(packet.pts)
            packet.stream = ostream
            out.mux(packet)
            indices = {round((pts - first_pts) / step) for pts in seen}
            if len(indices) >= frames and indices == set(range(len(indices))):
                break
    tmp.replace(dst)
    return len(seen)


# -- the plan: which file travels in which call ----------------------------------------------------
@dataclass(frozen=True)
class Item:
    """One file to carry: ``name`` is its path inside a part and in the store (``train/x.mkv``)."""

    name: str
    source: str  # where --prepare reads it from
    bytes: int
    frames: int = 0  # training frames it holds (0: not training data)


class PlanError(ValueError):
    pass


def plan_parts(required: list[Item], training: list[Item], room: int, first: list[Item] = ()) -> list[list[Item]]:
    """Parts in the order of the calls, each at most ``room`` bytes: the last holds ``required``
    (what the training call cannot do without), ``first`` (what an earlier call needs for itself)
    opens a first part of its own, and the training items go, largest first, into the first of
    the last part and the earlier ones they fit (first fit decreasing: few calls)."""
    for item in [*required, *training, *first]:
        if item.bytes > room:
            raise PlanError(f"{item.name} ({item.bytes:,} bytes) is larger than one call holds ({room:,})")
    final, used = list(required), sum(i.bytes for i in required)
    if used > room or sum(i.bytes for i in first) > room:
        raise PlanError(f"what the training call needs ({used:,} bytes) is more than one call holds ({room:,})")
    earlier: list[list[Item]] = [list(first)] if first else []
    sizes: list[int] = [sum(i.bytes for i in first)] if first else []
    for item in sorted(training, key=lambda i: -i.bytes):
        if used + item.bytes <= room:
            final.append(item)
            used += item.bytes
            continue
        for i, size in enumerate(sizes):
            if size + item.bytes <= room:
                earlier[i].append(item)
                sizes[i] += item.bytes
                break
        else:
            earlier.append([item])
            sizes.append(item.bytes)
    return [*earlier, final]


def plan_summary(parts: list[list[Item]]) -> dict:
    """What campaign.json records of a plan."""
    return {
        "parts": len(parts),
        "bytes_per_call": [sum(i.bytes for i in part) for part in parts],
        "files_per_call": [len(part) for part in parts],
        "training_frames": sum(i.frames for part in parts for i in part),
        "training_frames_in_last_call": sum(i.frames for i in parts[-1]) if parts else 0,
    }


MANIFEST = "part.json"
PLAN = "plan.json"


def write_parts(parts: list[list[Item]], root: Path, extra: dict | None = None) -> dict:
    """``root/1``, ``root/2``, ...: each part's files (hard links where possible) and a manifest of
    names, sizes and hashes; the whole plan, with ``extra`` (the clips, the packing), beside them and
    inside every part, so that whichever parts arrive can say what was meant to."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    plan = {
        **plan_summary(parts),
        **(extra or {}),
        "calls": [{"part": k, "files": {i.name: {"bytes": i.bytes, "frames": i.frames} for i in part}}
                  for k, part in enumerate(parts, 1)],
    }  # fmt: skip
    (root / PLAN).write_text(json.dumps(plan, indent=1))
    for k, part in enumerate(parts, 1):
        folder = root / str(k)
        files = {}
        for item in part:
            dst = folder / item.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                dst.hardlink_to(item.source)
            except OSError:
                shutil.copy2(item.source, dst)
            files[item.name] = {"bytes": dst.stat().st_size, "sha256": file_sha256(dst), "frames": item.frames}
        manifest = {"part": k, "parts": len(parts), "files": files}
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
        (folder / PLAN).write_text(json.dumps(plan, indent=1))
    return plan


def file_sha256(path: Path) -> str:
    # stvsr_cli.hub has the same, but importing stvsr_cli needs PyAV, which a staging call on a
    # bare machine receives rather than has.
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- on the machine: receiving parts, and what arrived ----------------------------------------------
def receive(carried: Path, store: Path) -> dict:
    """Move every part found under ``carried`` (folders with a manifest) into ``store``, file by file
    after checking its size and hash; a receipt per part records what came intact."""
    received, broken = [], []
    if not carried.is_dir():
        return {"received": received, "broken": broken}
    for folder in sorted(p for p in carried.iterdir() if (p / MANIFEST).is_file()):
        manifest = json.loads((folder / MANIFEST).read_text())
        intact = {}
        for name, facts in manifest["files"].items():
            path = folder / name
            if not path.is_file() or path.stat().st_size != facts["bytes"] or file_sha256(path) != facts["sha256"]:
                broken.append(name)
                continue
            dst = store / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), dst)
            intact[name] = facts
        (store / "receipts").mkdir(parents=True, exist_ok=True)
        receipt = {"part": manifest["part"], "parts": manifest["parts"], "files": intact}
        (store / "receipts" / f"part-{manifest['part']}.json").write_text(json.dumps(receipt, indent=1))
        shutil.copyfile(folder / PLAN, store / PLAN)
        received.append(manifest["part"])
        shutil.rmtree(folder, ignore_errors=True)
    return {"received": received, "broken": broken}


def arrival(store: Path) -> dict:
    """Which of the plan's parts are in ``store`` whole, which are not, and the training frames in
    hand: a part counts as arrived when its receipt lists every file the plan gave it and each file
    is there at its size."""
    if not (store / PLAN).is_file():
        return {"planned": False, "arrived": [], "missing": [], "training_frames": 0}
    plan = json.loads((store / PLAN).read_text())
    arrived, missing, files_missing, frames = [], [], [], 0
    for call in plan["calls"]:
        receipt_path = store / "receipts" / f"part-{call['part']}.json"
        receipt = json.loads(receipt_path.read_text())["files"] if receipt_path.is_file() else {}
        absent = [
            name for name, facts in call["files"].items()
            if name not in receipt or not (store / name).is_file() or (store / name).stat().st_size != facts["bytes"]
        ]  # fmt: skip
        files_missing += absent
        (missing if absent else arrived).append(call["part"])
        frames += sum(facts["frames"] for name, facts in call["files"].items() if name not in absent)
    return {
        "planned": True, "parts": len(plan["calls"]), "arrived": arrived, "missing": missing,
        "files_missing": files_missing, "training_frames": frames, "training_frames_planned": plan["training_frames"],
    }  # fmt: skip
