"""The model registry: every fact about a named model, declared once, read by the pipeline.

What an architecture can do (its scales, time factors, arbitrary times, ...) is declared once, in its
``Architecture`` below: the network class carries those facts (``models.base.VideoSRNet`` reads them
from here), and the registry checks entries against them without importing PyTorch (``stvsr
models``, classic on the decoded arrays). A registry entry (``weights/registry.toml``, shipped inside
the package as ``stvsr_cli.weights``, or a user's file) says what is its own: weights, licence,
window, context, and a narrower choice where it makes one; asking for more than the architecture can
do is refused in one line. The pipeline asks a ``ModelSpec``; it never branches on a model's name.
"""

from __future__ import annotations

import importlib
import importlib.resources
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from stvsr_cli.errors import StvsrError, UnknownModelError, UnsupportedOptionError, UsageError


@dataclass(frozen=True)
class Architecture:
    """What a network architecture can do, whatever its weights."""

    path: str  # "module:Class", imported only when a network of it is built
    learned: bool = True  # runs only with weights (untrained, it would make noise)
    scales: tuple[int, ...] | None = (4,)  # spatial factors (None: any integer, the constructor's ``scale``)
    time_factors: tuple[int, ...] | None = (2,)  # the fps_x its forward takes (None: any integer)
    arbitrary_times: bool = False  # forward takes ``times``: frames at any time between two inputs
    min_frames: int = 2  # fewest input frames its forward takes
    window_param: str | None = None  # the constructor parameter that sizes it for a window of exactly that many frames
    shot_edges: bool = False  # forward takes ``edges``: whether a window's ends are its shot's
    exact_tiles: bool = True  # False where a layer pools over the whole frame: tiles cannot give what whole frames do


ARCHITECTURES: dict[str, Architecture] = {
    "classic": Architecture(
        "stvsr_cli.models.classic:Classic", learned=False, scales=None, time_factors=None, arbitrary_times=True
    ),
    "zsm": Architecture("stvsr_cli.models.zsm:ZoomingSlowMo"),
    "stvun": Architecture("stvsr_cli.models.stvun:STVUN", time_factors=None, arbitrary_times=True, window_param="frames"),
    # Channel attention over a whole temporal profile (a row or column of the frame) in its refinement.
    "tpsr": Architecture("stvsr_cli.models.tpsr:TPSR", exact_tiles=False),
    # Its FFT data step is circular in time: it mirrors the clip at a shot's real ends only.
    "davsr": Architecture("stvsr_cli.models.davsr:DAVSR", shot_edges=True),
    # Its graph reasoning pools each node over the whole frame.
    "stinet": Architecture("stvsr_cli.models.stinet:STINet", time_factors=(2, 4, 6), exact_tiles=False),
}

REGISTRY_ENV = "STVSR_REGISTRY"

# How a weights file is stored: safetensors, or a PyTorch state dict (read with weights_only=True)
# in the authors' layout, converted to safetensors when it enters the cache.
WEIGHTS_FORMATS = ("safetensors", "zsm-official-pth", "pth")

_ENTRY_KEYS = {
    "arch": "architecture key (see ARCHITECTURES)",
    "params": "constructor keyword arguments",
    "scale": 'spatial factors, narrower than the architecture\'s: an integer, a list of integers, or "any"',
    "fps_x": 'temporal factors, narrower than the architecture\'s: an integer, a list of integers, or "any"',
    "times": '"fixed" to make only the fps_x steps where the architecture could make any time',
    "window": "input frames per model call (the planner's default)",
    "overlap": "input frames shared by consecutive calls (the planner's default)",
    "min_frames": "fewest input frames the network accepts, if more than the architecture's (shorter clips are padded)",
    "context": "input pixels around a tile or crop that its output pixels depend on (tiles overlap by this)",
    "half": "whether the network may run in float16",
    "weights": "hf://OWNER/REPO/PATH@REVISION, https://..., or a file relative to the registry file",
    "sha256": "hex digest of the weights file",
    "git_blob_sha1": "git blob id of the weights file, for sources that publish no sha256",
    "format": "weights file format",
    "license": "licence of the weights (or of the method), in full",
    "license_short": "the licence in a few words for the `stvsr models` table (default: `license` up to a parenthesis)",
    "description": "one line for `stvsr models`",
}


@dataclass(frozen=True)
class ModelSpec:
    """What a registered model is and can do.

    ``scales``/``fps_x`` are tuples of supported factors, or ``None`` for any integer. An
    architecture that accepts any scale takes it as its ``scale`` constructor argument. Every
    architecture is a ``models.base.VideoSRNet``: ``forward(frames, fps_x)``.
    ``arbitrary_times``: the network makes frames at any times in (0, 1) between two inputs (its
    ``forward`` takes ``times``), so any frame rate can be asked for.
    """

    name: str
    arch: str
    params: Mapping[str, Any] = field(default_factory=dict)
    scales: tuple[int, ...] | None = (4,)
    fps_x: tuple[int, ...] | None = (2,)
    arbitrary_times: bool = False
    window: int = 7
    overlap: int = 2
    min_frames: int = 2
    context: int = 16
    half: bool = True
    weights: str | None = None  # a URL, or an absolute path (relative ones are resolved when parsed)
    sha256: str | None = None
    git_blob_sha1: str | None = None
    format: str = "safetensors"
    license: str = ""
    license_short: str = ""
    description: str = ""

    @property
    def architecture(self) -> Architecture:
        return ARCHITECTURES[self.arch]

    @property
    def research_only(self) -> bool:
        """The weights may not be used for what one publishes (their training data's terms)."""
        return "research" in self.license.lower()

    def license_note(self) -> str | None:
        """One line for the user of research-only weights, before hours of work go into a film."""
        if not self.research_only:
            return None
        return (
            f"the weights of model '{self.name}' are for {self.license}, not for work you publish; "
            "`stvsr models` lists each model's licence"
        )

    @property
    def short_license(self) -> str:
        """The licence for a table column: ``license_short``, else ``short_licence(license)``."""
        return self.license_short or short_licence(self.license)

    def supports_scale(self, scale: int) -> bool:
        return self.scales is None or scale in self.scales

    def supports_fps_x(self, fps_x: int) -> bool:
        return fps_x >= 1 and (self.fps_x is None or self.arbitrary_times or fps_x in self.fps_x)

    def check_factors(self, *, scale: int | None = None, fps_x: int | None = None) -> None:
        """Refuse a spatial or temporal factor this model cannot do, saying which it can."""
        if scale is not None and not self.supports_scale(scale):
            raise UnsupportedOptionError(
                f"model '{self.name}' does not support --scale {scale}",
                f"it supports {self.describe_factors(self.scales)}",
            )
        if fps_x is not None and not self.supports_fps_x(fps_x):
            raise UnsupportedOptionError(
                f"model '{self.name}' does not support --fps-x {fps_x}",
                f"it supports {self.describe_factors(self.fps_x)}",
            )

    def check_step(self, step: Fraction, rates: str) -> None:
        """Refuse an output frame spacing of ``step`` input frames (``rates``: "25 -> 60 fps") that
        this model cannot make: fixed-factor models only make ``1/fps_x``."""
        if self.arbitrary_times:
            return
        if step.numerator == 1 and self.supports_fps_x(step.denominator):
            return
        raise UnsupportedOptionError(
            f"model '{self.name}' makes {self.describe_factors(self.fps_x)} times the frame rate, not {rates}",
            "use a model with arbitrary output times (`stvsr models`: times any), e.g. classic",
        )

    def window_and_overlap(self, window: int | None, overlap: int | None) -> tuple[int, int]:
        """The planner's window and overlap: the registered defaults, or checked user values."""
        window = self.window if window is None else window
        overlap = min(self.overlap, window - 1) if overlap is None else overlap
        if window < max(2, self.min_frames):
            raise UsageError(f"--window must be at least {max(2, self.min_frames)} for model '{self.name}'")
        param = ARCHITECTURES[self.arch].window_param if self.arch in ARCHITECTURES else None
        sized = self.params.get(param) if param else None  # a network built for windows of exactly this size
        if sized is not None and window != sized:
            raise UsageError(f"model '{self.name}' works on windows of exactly {sized} frames", "leave out --window")
        if not 1 <= overlap < window:
            raise UsageError(f"--overlap must be between 1 and {window - 1} (one less than the window)")
        return window, overlap

    def build(self, scale: int | None = None) -> Any:
        """A fresh network of this spec's architecture (a ``VideoSRNet``); ``scale`` goes to
        architectures that take any scale."""
        kwargs = dict(self.params)
        if self.scales is None and scale is not None:
            kwargs["scale"] = scale
        return architecture(self)(**kwargs)

    def describe_factors(self, factors: tuple[int, ...] | None) -> str:
        return "any" if factors is None else ", ".join(str(f) for f in factors)


@dataclass(frozen=True)
class Registry:
    models: Mapping[str, ModelSpec]
    default: str

    def get(self, name: str | None) -> ModelSpec:
        name = name or self.default
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models))
            raise UnknownModelError(f"unknown model '{name}'", f"known models: {known}") from None


def short_licence(text: str) -> str:
    """A licence in a few words, when the entry gives no ``license_short``: the text before its first
    parenthesis or semicolon ("GPL-3.0 (the authors' weights)" -> "GPL-3.0"), or all of it."""
    return re.split(r"[(;]", text, maxsplit=1)[0].strip(" ,") or text.strip()


def weights_dir() -> Path:
    """The folder of shipped weights and the built-in registry."""
    return Path(str(importlib.resources.files("stvsr_cli.weights")))


def _factors(value: Any, key: str, where: str) -> tuple[int, ...] | None:
    if value == "any":
        return None
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        raise StvsrError(f"{where}: '{key}' must be a positive integer, a list of them, or \"any\"")
    return tuple(values)


def _narrowed(
    table: dict, key: str, allowed: tuple[int, ...] | None, arch: str, where: str
) -> tuple[int, ...] | None:
    """An entry's factors, at most what the architecture allows (``allowed``; None: any)."""
    if key not in table:
        return allowed
    asked = _factors(table[key], key, where)
    if allowed is not None and (asked is None or not set(asked) <= set(allowed)):
        can = ", ".join(map(str, allowed))
        raise StvsrError(f"{where}: {key} {table[key]!r} asks for more than arch '{arch}' can do ({key} {can})")
    return asked


def parse_entry(name: str, table: Any, where: str, base_dir: Path) -> ModelSpec:
    """Turn one ``[models.NAME]`` table into a spec, naming the file and entry in every error. Facts
    of the architecture an entry leaves out are the architecture's; those it gives must be narrower.

    A local weights path is taken relative to ``base_dir``, the folder of the registry file."""
    where = f"{where}: model '{name}'"
    if not isinstance(table, dict):
        raise StvsrError(f"{where}: expected a table")
    unknown = sorted(set(table) - set(_ENTRY_KEYS))
    if unknown:
        raise StvsrError(f"{where}: unknown key(s) {', '.join(unknown)}", "known keys: " + ", ".join(_ENTRY_KEYS))
    arch_name = table.get("arch")
    if arch_name not in ARCHITECTURES:
        raise StvsrError(f"{where}: unknown arch {arch_name!r}", "known: " + ", ".join(sorted(ARCHITECTURES)))
    arch = ARCHITECTURES[arch_name]
    params = table.get("params", {})
    if not isinstance(params, dict):
        raise StvsrError(f"{where}: 'params' must be a table")
    sized = params.get(arch.window_param) if arch.window_param else None
    least = max(arch.min_frames, sized if isinstance(sized, int) else 0)
    ints = {}
    for key, default, low in (("window", 7, 2), ("overlap", 2, 1), ("min_frames", least, 1), ("context", 16, 4)):
        value = table.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise StvsrError(f"{where}: '{key}' must be an integer >= {low}")
        ints[key] = value
    if ints["min_frames"] < least:
        raise StvsrError(f"{where}: min_frames {ints['min_frames']} asks for more than arch '{arch_name}' can do "
                         f"(min_frames {least})")  # fmt: skip
    if ints["overlap"] >= ints["window"] or ints["min_frames"] > ints["window"]:
        raise StvsrError(f"{where}: need overlap < window and min_frames <= window")
    for key in ("weights", "sha256", "git_blob_sha1", "format", "license", "license_short", "description"):
        if key in table and not isinstance(table[key], str):
            raise StvsrError(f"{where}: '{key}' must be a string")
    weights = table.get("weights")
    if weights is not None and "://" in weights and not (table.get("sha256") or table.get("git_blob_sha1")):
        raise StvsrError(f"{where}: downloaded weights need a 'sha256' (or 'git_blob_sha1')")
    if table.get("format", "safetensors") not in WEIGHTS_FORMATS:
        raise StvsrError(f"{where}: unknown format {table['format']!r}", "known: " + ", ".join(WEIGHTS_FORMATS))
    if weights is not None and "://" not in weights:
        weights = str((base_dir / weights).resolve())
    if not isinstance(table.get("half", True), bool):
        raise StvsrError(f"{where}: 'half' must be true or false")
    # An entry that narrows fps_x asks for those steps only, unless it says times = "any" too.
    times = table.get("times", "any" if arch.arbitrary_times and "fps_x" not in table else "fixed")
    if times not in ("any", "fixed"):
        raise StvsrError(f'{where}: \'times\' must be "any" or "fixed"')
    if times == "any" and not arch.arbitrary_times:
        raise StvsrError(f"{where}: times \"any\" asks for more than arch '{arch_name}' can do (fixed time steps)")
    any_time = times == "any"
    return ModelSpec(
        name=name,
        arch=arch_name,
        params=dict(params),
        scales=_narrowed(table, "scale", arch.scales, arch_name, where),
        fps_x=_narrowed(table, "fps_x", arch.time_factors, arch_name, where) if "fps_x" in table or not any_time else None,
        arbitrary_times=any_time,
        half=table.get("half", True),
        weights=weights,
        sha256=table.get("sha256"),
        git_blob_sha1=table.get("git_blob_sha1"),
        format=table.get("format", "safetensors"),
        license=table.get("license", ""),
        license_short=table.get("license_short", ""),
        description=table.get("description", ""),
        **ints,
    )


def _read_registry_file(path: Path) -> tuple[dict[str, ModelSpec], str | None]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StvsrError(f"registry file {path} not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise StvsrError(f"cannot read registry file {path}: {exc}") from None
    unknown = sorted(set(data) - {"default", "models"})
    if unknown:
        raise StvsrError(
            f"{path}: unknown top-level key(s) {', '.join(unknown)}", "expected 'default' and [models.NAME] tables"
        )
    tables = data.get("models", {})
    if not isinstance(tables, dict):
        raise StvsrError(f"{path}: 'models' must be a table of tables")
    default = data.get("default")
    if default is not None and not isinstance(default, str):
        raise StvsrError(f"{path}: 'default' must be a model name")
    return {name: parse_entry(name, table, str(path), path.parent) for name, table in tables.items()}, default


def load_registry(extra: Path | str | None = None) -> Registry:
    """The built-in registry, with the file named by ``extra`` (or $STVSR_REGISTRY) merged over it."""
    models, default = _read_registry_file(weights_dir() / "registry.toml")
    extra = extra if extra is not None else os.environ.get(REGISTRY_ENV) or None
    if extra is not None:
        extra_models, extra_default = _read_registry_file(Path(extra))
        models.update(extra_models)
        default = extra_default or default
    if default not in models:
        raise StvsrError(f"the default model '{default}' is not registered")
    return Registry(models=models, default=default)


def architecture(spec: ModelSpec) -> type:
    """The ``nn.Module`` class of a spec's architecture, imported on first use."""
    module_name, class_name = ARCHITECTURES[spec.arch].path.split(":")
    return getattr(importlib.import_module(module_name), class_name)
