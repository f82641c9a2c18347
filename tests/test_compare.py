"""stvsr compare: one labelled PNG with the same crop from each model."""

from fractions import Fraction

import pytest
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


@pytest.fixture
def tiny_zsm(tmp_path, monkeypatch):
    save_file(ZoomingSlowMo(nf=8, groups=8, front_rbs=1, back_rbs=1).state_dict(), str(tmp_path / "tiny.safetensors"))
    (tmp_path / "models.toml").write_text(
        '[models.tiny]\narch = "zsm"\nparams = { nf = 8, groups = 8, front_rbs = 1, back_rbs = 1 }\n'
        'window = 3\noverlap = 1\nweights = "tiny.safetensors"\n'
    )
    monkeypatch.setenv("STVSR_REGISTRY", str(tmp_path / "models.toml"))


def test_compare_writes_labelled_crops_and_profiles(tmp_path, tiny_zsm):
    src, out = tmp_path / "in.mp4", tmp_path / "cmp.png"
    make_video(src, frames=6, size=(24, 20))
    args = ["compare", str(src), str(out), "--model", "tiny", "--crop", "10,20,40,32", "--profile"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.stderr
    with Image.open(out) as image:
        # Two columns (bicubic, tiny) of 40 px with an 8 px gap; label 22 + crop 32 + gap 8 +
        # a profile of the 11 real output frames (6 inputs at x2), 3 px each.
        assert image.size == (2 * 40 + 8, 22 + 32 + 8 + 11 * 3)
    assert "output frame 5" in result.stdout and "classic, tiny" in result.stdout


def test_compare_refuses_other_formats_and_bad_crops(tmp_path, clip):
    runner = CliRunner()
    bad_format = runner.invoke(main, ["compare", str(clip), str(tmp_path / "out.jpg")])
    assert bad_format.exit_code == 2 and "must be a .png" in bad_format.stderr
    outside = runner.invoke(main, ["compare", str(clip), str(tmp_path / "out.png"), "--crop", "900,0,10,10"])
    assert outside.exit_code == 2 and "outside" in outside.stderr
    assert not (tmp_path / "out.png").exists()
