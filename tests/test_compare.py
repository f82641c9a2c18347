"""stvsr compare: one labelled PNG with the same crop from each model."""

import re
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from media import make_video, read_frames, smooth
from PIL import Image, ImageDraw, ImageFont
from safetensors.torch import save_file

from stvsr_cli.cli import main
from stvsr_cli.compare import (
    Column,
    calls_for_outputs,
    compare,
    context_box,
    detailed_crop,
    parse_column,
    pick_output_frame,
)
from stvsr_cli.errors import UsageError
from stvsr_cli.io.colour import to_uint8
from stvsr_cli.io.filters import FrameFilters
from stvsr_cli.models.loader import load_model
from stvsr_cli.models.registry import load_registry
from stvsr_cli.models.zsm import ZoomingSlowMo
from stvsr_cli.pipeline.grain import add_grain, measure_shots
from stvsr_cli.pipeline.run import run_windows
from stvsr_cli.pipeline.windows import plan_windows


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


def test_the_calls_for_a_range_of_outputs_are_those_an_upscale_run_makes():
    plan = plan_windows(40, 7, 4, 2, 2)
    made = {}  # output index -> (call number, window) in a whole run
    output = 0
    for number, (window, steps) in enumerate(plan.calls()):
        for _ in steps:
            made[output] = (number, window)
            output += 1
    for wanted in (range(9, 10), range(1), range(30, 63), range(77, 78)):
        calls = calls_for_outputs(plan, wanted)
        first_call, first_window = made[wanted.start]
        assert calls.skip == first_call and calls.first_frame == first_window.start
        assert calls.first_output == min(j for j, (n, _) in made.items() if n == first_call)
        assert calls.last_frame == max(made[j][1].last for j in wanted)


def test_the_context_box_holds_the_crop_and_its_context_inside_the_frame():
    box, offset = context_box((100, 40, 50, 30), 4, 8, width=64, height=48)
    assert box == (17, 2, 46, 26)  # x0 = 100 // 4 - 8, y0 = 40 // 4 - 8, x1 = ceil(150 / 4) + 8, y1 = ceil(70 / 4) + 8
    assert offset == (40 - 2 * 4, 100 - 17 * 4)
    assert context_box((0, 0, 256, 192), 4, 16, width=64, height=48) == ((0, 0, 64, 48), (0, 0))


def test_compare_runs_a_learned_model_on_the_crop_and_gets_the_whole_frame_pixels(tmp_path):
    """stvun-gpu on crop + context only, the windows around the frame of a 12-frame clip, against the
    same windows run on whole frames: the crop's pixels agree to rounding (PSNR over 50 dB)."""
    src, out = tmp_path / "in.mkv", tmp_path / "cmp.png"
    make_video(src, frames=12, size=(96, 72), codec="ffv1", pix_fmt="bgr0", content=smooth)
    x, y, w, h = 150, 100, 64, 48
    result = compare(src, out, models=["stvun-gpu"], crop=(x, y, w, h), time=Fraction(6, 25), device="cpu")
    with Image.open(out) as image:
        picture = np.asarray(image.convert("RGB")).astype(np.float64)
    shown = picture[22 : 22 + h, w + 8 : 2 * w + 8]
    registry = load_registry()
    spec = registry.get("stvun-gpu")
    plan = plan_windows(12, spec.window, spec.overlap, 2, spec.min_frames)
    whole = []
    run_windows(read_frames(src), plan, load_model(spec, scale=4, device="cpu"), whole.append)
    expected = to_uint8(whole[result.frame])[y : y + h, x : x + w].astype(np.float64)
    mse = ((shown - expected) ** 2).mean()
    assert 10 * np.log10(255**2 / max(mse, 1e-12)) > 50


def test_the_detailed_crop_holds_the_texture_not_flat_ground_or_a_few_specks():
    """A 40 px textured patch on a flat frame, in two places, with 12 dust specks elsewhere (more
    gradient energy than the patch unless each pixel's is clipped): the 64 px box holds the patch;
    on a flat frame, the box is in the centre."""
    rng = np.random.default_rng(1)
    for px, py in ((10, 70), (110, 70)):
        luma = np.full((120, 160), 100.0)
        luma[py : py + 40, px : px + 40] += rng.uniform(-20, 20, (40, 40))
        luma[8:20:4, 70:86:4] = 255
        x, y = detailed_crop(luma, (64, 64))
        assert x <= px and px + 40 <= x + 64 and y <= py and py + 40 <= y + 64, (px, py, x, y)
    assert detailed_crop(np.full((120, 160), 50.0), (64, 64)) == (48, 28)
    assert detailed_crop(np.full((30, 40), 50.0), (64, 64)) == (0, 0)  # a frame smaller than the box


def corner_detail(index: int, height: int, width: int) -> np.ndarray:
    """Flat grey but for a 40 px checkerboard in the bottom-right corner (moving a pixel a frame)."""
    frame = np.full((height, width, 3), 120, dtype=np.uint8)
    y, x = np.mgrid[0:40, 0:40]
    frame[-40:, -40:] = np.where(((x + index) // 2 + y // 2) % 2 == 0, 40, 200)[..., None]
    return frame


def test_compare_without_a_crop_shows_where_the_frame_has_detail(tmp_path):
    src, out = tmp_path / "in.mkv", tmp_path / "cmp.png"
    make_video(src, frames=4, size=(160, 120), codec="ffv1", pix_fmt="bgr0", content=corner_detail)
    result = CliRunner().invoke(main, ["compare", str(src), str(out), "-m", "classic"])
    assert result.exit_code == 0, result.stderr
    found = re.search(r"crop (\d+),(\d+),(\d+),(\d+) \(most detail\)", result.stdout)
    x, y, w, h = map(int, found.groups())
    assert (w, h) == (256, 256)
    assert x <= 4 * 120 and 4 * 160 <= x + w and y <= 4 * 80 and 4 * 120 <= y + h  # holds the corner


def grainy(index: int, height: int, width: int) -> np.ndarray:
    """Mid-grey with film-like grain: new white noise of spread 12 every frame, one for all channels."""
    noise = np.random.default_rng(index).normal(0, 12, (height, width, 1))
    return np.clip(128 + noise, 0, 255).repeat(3, axis=2).round().astype(np.uint8)


def high_pass_energy(picture: np.ndarray) -> float:
    """Mean squared difference of neighbouring pixels: fine detail, noise and grain."""
    return float((np.diff(picture, axis=0) ** 2).mean() + (np.diff(picture, axis=1) ** 2).mean())


def label_band(text: str, width: int) -> np.ndarray:
    """The label band ``text`` gets over a column ``width`` pixels wide."""
    band = Image.new("RGB", (width, 22), (24, 24, 24))
    ImageDraw.Draw(band).text((4, 3), text, fill=(235, 235, 235), font=ImageFont.load_default(size=14))
    return np.asarray(band).astype(np.float64)


def grainy_picture(tmp_path, model: str) -> np.ndarray:
    """``compare -m MODEL`` on a grainy 64x48 clip (the crop: the whole 256x192 output), as RGB floats."""
    src, out = tmp_path / "in.mkv", tmp_path / "cmp.png"
    make_video(src, frames=6, size=(64, 48), codec="ffv1", pix_fmt="bgr0", content=grainy)
    result = CliRunner().invoke(main, ["compare", str(src), str(out), "-m", model])
    assert result.exit_code == 0, result.stderr
    assert f"classic, {model}" in result.stdout
    with Image.open(out) as image:
        return np.asarray(image.convert("RGB")).astype(np.float64)


def test_a_denoised_column_is_smoother_and_labelled_with_its_spec(tmp_path):
    picture = grainy_picture(tmp_path, "classic+denoise=strong")
    plain, denoised = picture[22:, :256], picture[22:, 264:]
    assert high_pass_energy(denoised) < 0.5 * high_pass_energy(plain)
    assert abs(denoised.mean() - plain.mean()) < 2  # the same picture, less noise
    assert (picture[:22, :256] == label_band("bicubic + blend", 256)).all()
    assert (picture[:22, 264:] == label_band("classic+denoise=strong", 256)).all()


def test_a_grain_column_gets_the_inputs_grain_back(tmp_path):
    picture = grainy_picture(tmp_path, "classic+grain")
    plain, grained = picture[22:, :256], picture[22:, 264:]
    assert high_pass_energy(grained) > 1.5 * high_pass_energy(plain)
    # Exactly upscale's grain: measured on the decoded input, drawn for the shown output frame's number (5).
    profile = measure_shots(read_frames(tmp_path / "in.mkv"), 6, [])[0]
    assert (grained == add_grain(plain.astype(np.uint8), profile, 4, 5)).all()
    assert (picture[:22, 264:] == label_band("classic+grain", 256)).all()


def test_columns_accept_clean_up_suffixes_and_refuse_others(tmp_path, clip):
    assert parse_column("stvun-gpu+denoise=strong+grain") == Column(
        "stvun-gpu+denoise=strong+grain", "stvun-gpu", FrameFilters(denoise="strong"), grain=True
    )
    assert parse_column("classic+deflicker").filters == FrameFilters(deflicker=True)
    for bad in ("classic+denoise=extreme", "classic+grain=keep", "classic+grain+grain", "classic+"):
        with pytest.raises(UsageError):
            parse_column(bad)
    result = CliRunner().invoke(main, ["compare", str(clip), str(tmp_path / "out.png"), "-m", "classic+sharpen"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "unknown clean-up 'sharpen'" in result.stderr
    assert "+denoise=off|light|medium|strong" in result.stderr and "+grain" in result.stderr
    assert not (tmp_path / "out.png").exists()
