"""stvsr compare: one labelled PNG with the same crop from each model."""

from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from media import make_video
from PIL import Image
from safetensors.torch import save_file

from stvsr_cli.cli import main
from stvsr_cli.compare import pick_output_frame
from stvsr_cli.models.zsm import ZoomingSlowMo


def test_the_shown_frame_is_an_in_between_one():
    assert pick_output_frame(10, 2, Fraction(25), None) == 9  # the middle (input time 4.5)
    assert pick_output_frame(10, 2, Fraction(25), Fraction(0)) == 1
    assert pick_output_frame(10, 2, Fraction(25), Fraction(100)) == 17  # the last gap, not a held frame
    assert pick_output_frame(10, 3, Fraction(25), Fraction(2, 25)) in (5, 7)
    assert pick_output_frame(1, 2, Fraction(25), None) == 0  # nothing to interpolate


PAINT = (0.25, 0.5, 0.75)  # the colour the painter model outputs everywhere


@pytest.fixture
def painter(tmp_path, monkeypatch):
    """A tiny Zooming Slow-Mo whose weights are all zero but the last bias: every output pixel is PAINT."""
    net = ZoomingSlowMo(nf=8, groups=8, front_rbs=1, back_rbs=1)
    state = {k: torch.zeros_like(v) for k, v in net.state_dict().items()}
    state["conv_last.bias"] = torch.tensor(PAINT)
    save_file(state, str(tmp_path / "painter.safetensors"))
    entry = 'arch = "zsm"\nparams = { nf = 8, groups = 8, front_rbs = 1, back_rbs = 1 }\nwindow = 3\noverlap = 1\n'
    (tmp_path / "models.toml").write_text(  # the same model under a second name
        f'[models.painter]\n{entry}weights = "painter.safetensors"\n'
        f'[models.another-name]\n{entry}weights = "painter.safetensors"\n'
    )
    monkeypatch.setenv("STVSR_REGISTRY", str(tmp_path / "models.toml"))


def classic_frames(frames):
    """classic's x4, x2 output (0-255) by its definition: each input bicubic x4 (half-pixel centres,
    clamped to [0, 1]), and between two inputs their mean."""
    up = [
        F.interpolate(torch.from_numpy(f).permute(2, 0, 1)[None].double() / 255, scale_factor=4, mode="bicubic")
        .clamp(0, 1)[0]
        .permute(1, 2, 0)
        .numpy()
        * 255
        for f in frames
    ]
    return [up[j // 2] if j % 2 == 0 else (up[j // 2] + up[j // 2 + 1]) / 2 for j in range(2 * len(up) - 1)]


def test_compare_puts_each_models_crop_and_profile_in_its_labelled_column(tmp_path, painter):
    """Columns in order (classic, then the model) at 40 px + 8 px gaps under a 22 px label band: the
    crop of the shown in-between frame, then the profile of the crop's middle row, 3 px per output frame."""
    src, out = tmp_path / "in.mkv", tmp_path / "cmp.png"
    frames = make_video(src, frames=6, size=(24, 20), codec="ffv1", pix_fmt="bgr0")  # lossless RGB
    x, y, w, h = 10, 20, 40, 32
    result = CliRunner().invoke(
        main, ["compare", str(src), str(out), "--model", "painter", "--crop", f"{x},{y},{w},{h}", "--profile"]
    )
    assert result.exit_code == 0, result.stderr
    assert "output frame 5" in result.stdout and "classic, painter" in result.stdout
    with Image.open(out) as image:
        assert image.size == (2 * 40 + 8, 22 + 32 + 8 + 11 * 3)  # 11 output frames: 6 inputs at x2
        picture = np.asarray(image.convert("RGB")).astype(np.float64)
    label, crop_top, strip_top = slice(0, 22), 22, 22 + h + 8
    columns = (slice(0, 40), slice(48, 88))
    # classic's column: output frame 5 is halfway between inputs 2 and 3.
    classic = classic_frames(frames)
    shown = picture[crop_top : crop_top + h, columns[0]]
    assert np.abs(shown - classic[5][y : y + h, x : x + w]).max() <= 1
    row = y + h // 2
    for j in range(11):  # its profile: output frame j's row, 3 px tall
        expected = classic[j][row, x : x + w]
        band = picture[strip_top + 3 * j : strip_top + 3 * j + 3, columns[0]]
        assert np.abs(band - expected).max() <= 1, f"profile row of output frame {j}"
    # The model's column: its colour everywhere, in the crop and in the profile.
    paint = 255 * np.array(PAINT)
    assert np.abs(picture[crop_top : crop_top + h, columns[1]] - paint).max() <= 1
    assert np.abs(picture[strip_top:, columns[1]] - paint).max() <= 1
    # The gap and the space between crop and profile are background.
    assert (picture[crop_top:, 40:48] == 24).all() and (picture[crop_top + h : strip_top] == 24).all()
    # The label band names the model: the same model under another name changes only its column's label.
    args = ["compare", str(src), str(tmp_path / "renamed.png"), "--model", "another-name", "--crop", "10,20,40,32"]
    assert CliRunner().invoke(main, [*args, "--profile"]).exit_code == 0
    with Image.open(tmp_path / "renamed.png") as image:
        renamed = np.asarray(image.convert("RGB")).astype(np.float64)
    changed = np.abs(renamed - picture).max(axis=2) > 100
    assert changed[label, 48:].any() and not changed[label, :48].any() and not changed[22:].any()


def test_compare_refuses_other_formats_and_bad_crops(tmp_path, clip):
    runner = CliRunner()
    bad_format = runner.invoke(main, ["compare", str(clip), str(tmp_path / "out.jpg")])
    assert bad_format.exit_code == 2 and "must be a .png" in bad_format.stderr
    outside = runner.invoke(main, ["compare", str(clip), str(tmp_path / "out.png"), "--crop", "900,0,10,10"])
    assert outside.exit_code == 2 and "outside" in outside.stderr
    assert not (tmp_path / "out.png").exists()
