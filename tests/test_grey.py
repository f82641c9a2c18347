"""Black-and-white in, black-and-white out, decided per shot: no model may tint a grey film, and no
neutral tile or window of a colour film is made grey."""

import json

import av
import numpy as np
import pytest
from click.testing import CliRunner
from media import make_video, pattern, read_frames

from stvsr_cli.cli import main
from stvsr_cli.io.decode import frame_is_grey
from stvsr_cli.pipeline.grey import grey_shots, grey_windows, luma_array
from stvsr_cli.pipeline.windows import Window

# stvun-film saw films made grey at random against colour targets, so it guesses colour from grey
# (a mean spread of 7 levels between the channels on the grey test pattern): the model to catch a tint.
TINTING_MODEL = "stvun-film"


def grey_pattern(index: int, height: int, width: int) -> np.ndarray:
    """The moving test pattern's luma in all three channels: a grey film."""
    return luma_array(pattern(index, height, width))


def frame(rgb: np.ndarray, fmt: str) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=fmt)


@pytest.mark.parametrize("fmt", ["yuv420p", "yuv444p", "yuv420p10le", "yuvj420p", "gray", "rgb24", "nv12"])
def test_a_grey_frame_is_grey_and_a_small_coloured_patch_is_not(fmt):
    grey = grey_pattern(0, 48, 64)
    assert frame_is_grey(frame(grey, fmt))
    if fmt == "gray":
        return
    spotted = grey.copy()
    spotted[20:24, 30:34] = (200, 40, 40)  # 16 red pixels of 3072
    assert not frame_is_grey(frame(spotted, fmt))
    sepia = (grey * np.array([1.0, 0.9, 0.75])).astype(np.uint8)
    assert not frame_is_grey(frame(sepia, fmt))


def test_a_shot_is_grey_when_every_frame_of_it_is():
    assert grey_shots([False, False, True, True, True], cuts=[2]) == [2]
    assert grey_shots([True, True, True, False, True], cuts=[]) == []  # one colour frame: a colour shot
    assert grey_shots([True, True, False, True], cuts=[1, 3]) == [0, 3]
    is_grey = grey_windows([3], cuts=[3])
    assert not is_grey(Window((0, 1, 2))) and is_grey(Window((3, 4, 5)))
    assert grey_windows([], cuts=[3]) is None
    # With repeated frames dropped, windows count the unique frames: mapped back to the input's.
    is_grey = grey_windows([6], cuts=[6], original=lambda i: 2 * i)
    assert not is_grey(Window((1, 2))) and is_grey(Window((3, 4)))


def upscale_cli(src, dst, *extra):
    args = ["upscale", str(src), str(dst), "--model", TINTING_MODEL, "--json", "--overwrite", *extra]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def chroma(path):
    """The output's chroma planes as offsets from neutral: ``[frames, 2, H, W]``."""
    return np.stack(read_frames(path, fmt="yuv444p"))[:, 1:].astype(int) - 128


def test_a_grey_film_through_the_film_model_stays_exactly_grey(tmp_path):
    src, dst = tmp_path / "grey.mp4", tmp_path / "out.mp4"
    make_video(src, frames=5, size=(32, 24), content=grey_pattern)
    summary = upscale_cli(src, dst)
    assert summary["grey_shots"] == [0] and summary["frames"] == 10
    assert np.abs(chroma(dst)).max() == 0
    assert np.stack(read_frames(dst, fmt="yuv444p"))[:, 0].std() > 20  # and the picture is there


def test_a_neutral_part_of_a_colour_film_keeps_the_models_colour_tiled_or_not(tmp_path):
    """The left 96 of 160 columns are grey: a tile of 80 there sees only grey, yet belongs to a colour
    film; the model's output (its faint colour there included) is the same tiled and untiled. (160x40:
    small enough that the untiled run needs no memory probe.)"""

    def half_grey(index, height, width):
        picture = pattern(index, height, width)
        picture[:, :96] = luma_array(picture[:, :96])
        return picture

    src = tmp_path / "half.mkv"
    make_video(src, frames=4, size=(160, 40), codec="ffv1", pix_fmt="yuv444p", content=half_grey)
    lossless = ["--codec", "ffv1", "--pix-fmt", "yuv444p"]
    whole = upscale_cli(src, tmp_path / "whole.mkv", *lossless)
    tiled = upscale_cli(src, tmp_path / "tiled.mkv", "--tile", "80", *lossless)
    assert whole["grey_shots"] == tiled["grey_shots"] == []
    a, b = chroma(tmp_path / "whole.mkv"), chroma(tmp_path / "tiled.mkv")
    assert np.abs(a - b).max() <= 1  # the tiles give the whole frame's output, to rounding
    left = b[..., : 4 * 64]  # output columns whose tiles saw only grey input
    assert np.abs(left).mean() > 1  # the model's colour, not forced to grey


def test_colour_then_grey_is_decided_per_shot_and_a_fade_within_a_shot_is_colour(tmp_path):
    def cut_to_grey(index, height, width):
        return pattern(index, height, width) if index < 4 else 255 - grey_pattern(index, height, width)

    src, dst = tmp_path / "cut.mkv", tmp_path / "cut_out.mkv"
    make_video(src, frames=8, size=(48, 32), codec="ffv1", pix_fmt="yuv444p", content=cut_to_grey)
    summary = upscale_cli(src, dst, "--codec", "ffv1", "--pix-fmt", "yuv444p")
    assert summary["cuts"] == [4] and summary["grey_shots"] == [4]
    planes = chroma(dst)
    assert np.abs(planes[8:]).max() == 0  # the grey shot: exactly grey
    assert np.abs(planes[:7]).mean() > 5  # the colour shot: colour

    def fade(index, height, width):  # colour to grey over one shot, no cut
        colour = pattern(index, height, width).astype(float)
        return (colour + index / 3 * (luma_array(pattern(index, height, width)) - colour)).round().astype(np.uint8)

    src, dst = tmp_path / "fade.mkv", tmp_path / "fade_out.mkv"
    make_video(src, frames=4, size=(48, 32), codec="ffv1", pix_fmt="yuv444p", content=fade)
    summary = upscale_cli(src, dst, "--codec", "ffv1", "--pix-fmt", "yuv444p")
    assert summary["cuts"] == [] and summary["grey_shots"] == []
    assert np.abs(chroma(dst)[-1]).mean() > 1  # the last, grey input frame keeps the model's colour
