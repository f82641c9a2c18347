"""Every shipped model still scores what its model card says: ``stvsr eval``'s protocol on one shared
eval clip, checked against the card's own per-clip table (read from the card, never copied here)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

from stvsr_cli.evaluation import evaluate
from stvsr_cli.models.loader import load_model
from stvsr_cli.models.registry import load_registry

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval"
CLIP = DATA / "vimeo_septuplet_samples__00001_0001.mkv"
TOLERANCE_DB = 0.05  # the cards print two decimals

pytestmark = [
    pytest.mark.skipif(not CLIP.is_file(), reason=f"{CLIP} is not here (../shared/data)"),
    pytest.mark.usefixtures("one_thread"),
]


def shipped() -> list[str]:
    """Registry models whose weights ship beside the registry file (no download)."""
    return sorted(name for name, spec in load_registry().models.items() if spec.weights and "://" not in spec.weights)


def card_row(card: Path, clip: str) -> dict:
    """The ``## Evaluation`` table of a model card: this clip's classic and model PSNR-Y, and the
    protocol the table was made with (``--degradation`` and ``--fps-x`` in the text above it)."""
    text = card.read_text()
    section = text.split("\n## Evaluation", 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    header_at = next(i for i, line in enumerate(lines) if line.startswith("| clip |") and "this model" in line)
    intro = "\n".join(lines[:header_at])
    header = [cell.strip() for cell in lines[header_at].strip("|").split("|")]
    row = next(line for line in lines[header_at:] if line.startswith(f"| {clip} |"))
    cells = dict(zip(header, (cell.strip() for cell in row.strip("|").split("|")), strict=True))
    degradation = re.search(r"--degradation (\w+)", intro)
    fps_x = re.search(r"--fps-x (\d+)", intro)
    return {
        "model": float(cells["this model"].split("/")[0]),
        "classic": float(cells["classic"].split("/")[0]),
        "degradation": degradation.group(1) if degradation else "standard",
        "fps_x": int(fps_x.group(1)) if fps_x else 2,
    }


@cache
def score(name: str, degradation: str, fps_x: int) -> float:
    """PSNR-Y of ``stvsr eval --model name`` on the clip, on the CPU."""
    spec = load_registry().get(name)
    model = load_model(spec, scale=4, device="cpu", offline=True)
    (clip,) = evaluate([CLIP], model, fps_x=fps_x, degradation=degradation).clips
    return clip.psnr_y


def test_every_shipped_model_has_a_card_with_this_clip():
    names = shipped()
    assert {"stvun", "stvun-gpu", "tpsr", "stinet", "davsr", "zsm-lite-cpu"} <= set(names)
    for name in names:
        card = Path(load_registry().get(name).weights).with_suffix(".md")
        assert card.is_file(), f"{name} has no model card {card.name}"
        card_row(card, CLIP.stem)  # parses


@pytest.mark.parametrize("name", shipped())
def test_shipped_model_scores_what_its_card_says(name):
    """The model's PSNR-Y on the clip, by the card's protocol, equals the card's number; so does
    classic's (which checks the protocol the card names is the one run here)."""
    card = Path(load_registry().get(name).weights).with_suffix(".md")
    row = card_row(card, CLIP.stem)
    classic = score("classic", row["degradation"], row["fps_x"])
    assert classic == pytest.approx(row["classic"], abs=TOLERANCE_DB), f"classic under {card.name}'s protocol"
    measured = score(name, row["degradation"], row["fps_x"])
    assert measured == pytest.approx(row["model"], abs=TOLERANCE_DB), (
        f"{name}: {measured:.3f} dB on {CLIP.stem} ({row['degradation']}), card {card.name} says {row['model']}"
    )
