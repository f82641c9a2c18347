"""The held-out clips: footage no training run sees, our nearest stand-in for footage no one has seen.

Three clips of the permissively licensed training set (``train2``) are held out as ``val_unseen``:
chosen once by a seeded hash of the file names (``choose_held_out``), taking the next clip whenever
one comes from a source already taken, so that the three differ in content (a hand-held pan over
trees, a highway dash-cam, a drone over coastal cliffs). They are listed here so that the choice
cannot drift when clips are added; a test checks the list against the rule. Training skips them
wherever they are given, and evaluation reports them beside the eval clips.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

SEED = "val_unseen"
VAL_UNSEEN = (
    "mapillary_mapillary_tools__park_trees_pan",
    "udacity_CarND-Vehicle-Detection__highway_cars_dashcam",
    "gopro_gpmf-parser__aerial_coast_cliffs_karma",
)


def choose_held_out(names: Iterable[str], count: int = 3, seed: str = SEED) -> list[str]:
    """``count`` clip names (file stems, ``owner_repository__what``) in the order of
    ``sha256(seed:name)``, at most one per source owner."""
    ranked = sorted(names, key=lambda name: hashlib.sha256(f"{seed}:{name}".encode()).hexdigest())
    chosen, owners = [], set()
    for name in ranked:
        owner = name.split("__")[0].split("_")[0]
        if owner not in owners:
            chosen.append(name)
            owners.add(owner)
        if len(chosen) == count:
            break
    return chosen


def is_held_out(name: str) -> bool:
    return name in VAL_UNSEEN
