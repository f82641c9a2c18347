"""Black-and-white in, black-and-white out: no model may tint a grey film."""

import numpy as np
import torch
from click.testing import CliRunner
from media import make_video, pattern, read_frames

from stvsr_cli.cli import main
from stvsr_cli.models.loader import grey_if_grey


def grey_pattern(index: int, height: int, width: int) -> np.ndarray:
    """The moving test pattern's luma in all three channels: a grey film."""
    luma = pattern(index, height, width) @ np.array([0.299, 0.587, 0.114])
    return np.repeat(luma.round().astype(np.uint8)[..., None], 3, axis=-1)


def test_grey_inputs_make_grey_outputs_of_the_same_brightness():
    torch.manual_seed(0)
    grey = torch.rand(3, 1, 8, 8).expand(3, 3, 8, 8)
    tinted = torch.rand(5, 1, 32, 32).expand(5, 3, 32, 32) + torch.tensor([0.02, 0.0, -0.03]).view(1, 3, 1, 1)
    out = grey_if_grey(grey, tinted)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    luma = 0.299 * tinted[:, 0] + 0.587 * tinted[:, 1] + 0.114 * tinted[:, 2]
    torch.testing.assert_close(out[:, 0], luma)


def test_colour_and_sepia_inputs_keep_their_colour():
    torch.manual_seed(0)
    tinted = torch.rand(5, 3, 32, 32)
    colour = torch.rand(3, 3, 8, 8)
    sepia = torch.rand(3, 1, 8, 8).expand(3, 3, 8, 8) * torch.tensor([1.0, 0.9, 0.75]).view(1, 3, 1, 1)
    assert torch.equal(grey_if_grey(colour, tinted), tinted)
    assert torch.equal(grey_if_grey(sepia, tinted), tinted)


def test_a_grey_film_through_the_film_model_has_neutral_chroma(tmp_path):
    """stvun-film saw films made grey at random against colour targets, so it guesses colour from grey
    (up to 7.7 levels of tint on a real 1903 film before this rule); the file it writes must be grey."""
    src, dst = tmp_path / "grey.mp4", tmp_path / "out.mp4"
    make_video(src, frames=5, size=(32, 24), content=grey_pattern)
    result = CliRunner().invoke(main, ["upscale", str(src), str(dst), "--model", "stvun-film", "--quiet"])
    assert result.exit_code == 0, result.output
    frames = read_frames(dst, fmt="yuv444p")  # planes Y, U, V
    assert len(frames) == 10  # twice the frames: the duration kept
    chroma = np.stack(frames)[:, 1:].astype(int) - 128
    assert np.abs(chroma).max() <= 1  # neutral to rounding
    assert np.stack(frames)[:, 0].std() > 20  # and the picture is there
