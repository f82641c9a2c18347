"""val_unseen: three clips of the permissive training set no run trains on, chosen by a fixed rule."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
from media import make_video

from stvsr_cli.training.data import load_frames
from stvsr_cli.training.split import VAL_UNSEEN, choose_held_out

TRAIN2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "train2"


def test_the_rule_picks_one_clip_per_source_in_hash_order():
    names = ["a_x__one", "a_y__two", "b_z__three", "c_w__four", "d_v__five"]
    chosen = choose_held_out(names)
    assert len(chosen) == 3 and len({n.split("_")[0] for n in chosen}) == 3
    assert chosen == choose_held_out(list(reversed(names)))  # the order given does not matter
    first = min(names, key=lambda n: hashlib.sha256(f"val_unseen:{n}".encode()).hexdigest())
    assert chosen[0] == first


@pytest.mark.skipif(not TRAIN2.is_dir(), reason="the permissive training clips are not here")
def test_the_listed_clips_are_what_the_rule_picks_from_train2():
    names = [p.stem for p in TRAIN2.glob("*.mp4")]
    assert len(names) == 14 and list(VAL_UNSEEN) == choose_held_out(names)


def test_training_never_reads_a_held_out_clip(tmp_path):
    folder = tmp_path / "train2"
    folder.mkdir()
    for name in (VAL_UNSEEN[0], "someone_repo__other_clip"):
        make_video(folder / f"{name}.mp4", frames=3, size=(32, 24))
    cache = load_frames([folder])
    assert cache.names == ["someone_repo__other_clip"] and [p.stem for p in cache.held_out] == [VAL_UNSEEN[0]]
    assert all(isinstance(c, np.ndarray) for c in cache.clips)


def test_a_training_run_reports_the_held_out_clips_beside_the_eval_clips(tmp_path):
    from media import make_training_clips, smooth, train_tiny

    data = make_training_clips(tmp_path / "train2", frames=7)
    make_video(data / f"{VAL_UNSEEN[1]}.mkv", frames=7, size=(40, 36), codec="ffv1", pix_fmt="bgr0", content=smooth)
    evaluation = make_training_clips(tmp_path / "eval", frames=5, count=1)
    tiny = {"nf": 8, "groups": 8, "front_rbs": 1, "back_rbs": 1}
    out = tmp_path / "run"
    train_tiny("zsm", tiny, data, out, "tiny", steps=2, lr="1e-3", extra=["--eval", str(evaluation)])
    card = (out / "tiny.md").read_text()
    assert "2 clips" in card and "1 held out as val_unseen" in card
    assert "Held out (`val_unseen`: 1 training clip no run" in card and f"| {VAL_UNSEEN[1]} |" in card
