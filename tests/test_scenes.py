import numpy as np
import pytest

from stvsr_cli.io.decode import thumbnail_size
from stvsr_cli.pipeline.scenes import DEFAULT_SCENE_THRESHOLD, cut_scores, find_cuts, shots


def texture(seed: int, shift: int = 0, size=(36, 64)) -> np.ndarray:
    """A random-looking but smooth picture, shifted right by ``shift`` pixels (a pan)."""
    rng = np.random.default_rng(seed)
    big = rng.integers(0, 256, (size[0] // 4 + 1, size[1] // 4 + 40)).astype(np.float32)
    big = np.kron(big, np.ones((4, 4), np.float32))
    return big[: size[0], shift : shift + size[1]].astype(np.uint8)


def test_hard_cut_is_found_and_only_there():
    frames = [texture(1, shift=i) for i in range(6)] + [texture(2, shift=i) for i in range(6)]
    assert find_cuts(frames) == [6]


def test_a_smooth_pan_has_no_cut_even_when_it_starts_suddenly():
    still = [texture(3)] * 4
    pan = [texture(3, shift=2 * i) for i in range(1, 15)]
    assert find_cuts(still + pan) == []


def test_scores_stream_one_per_frame_and_threshold_applies():
    frames = [texture(4)] * 3 + [texture(5)] * 3
    scores = list(cut_scores(iter(frames)))
    assert len(scores) == 6 and scores[0] == 0
    assert scores[3] > DEFAULT_SCENE_THRESHOLD and max(scores[:3] + scores[4:]) == 0
    assert find_cuts(frames, threshold=scores[3] + 1) == []


@pytest.mark.parametrize("n, cuts, expected", [(5, [], [(0, 5)]), (5, [2, 2, 0, 5, 9], [(0, 2), (2, 5)])])
def test_shots(n, cuts, expected):
    assert [(r.start, r.stop) for r in shots(n, cuts)] == expected


def test_thumbnail_keeps_the_shape():
    assert thumbnail_size(1920, 1080) == (64, 36) and thumbnail_size(40, 30) == (40, 30)
