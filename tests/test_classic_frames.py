"""classic on arrays (FFmpeg's scaler, integer blends): the reference's pixels to rounding, each
input frame upscaled once, and what upscale runs for classic on the CPU."""

import json
import math
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from media import make_video, pattern, read_frames

from stvsr_cli.api import upscale
from stvsr_cli.cli import main
from stvsr_cli.io.encode import EncodeSettings
from stvsr_cli.models.classic import Classic
from stvsr_cli.models.loader import load_model
from stvsr_cli.models.registry import load_registry
from stvsr_cli.pipeline import classic_frames
from stvsr_cli.pipeline.classic_frames import ClassicFrames, blend_integer
from stvsr_cli.pipeline.run import run_windows
from stvsr_cli.pipeline.transfer import to_arrays, to_tensor
from stvsr_cli.pipeline.windows import plan_windows


def textured(index: int, height: int, width: int, dtype=np.uint8) -> np.ndarray:
    """The moving pattern plus fixed noise: edges and texture where bicubic overshoots and clamps."""
    noise = np.random.default_rng(index).integers(-40, 41, (height, width, 3))
    frame = np.clip(pattern(index, height, width).astype(np.int64) + noise, 0, 255)
    return (frame * 257).astype(np.uint16) if dtype == np.uint16 else frame.astype(np.uint8)


def reference(frames: list[np.ndarray], times: list[Fraction], scale: int) -> list[np.ndarray]:
    """The float32 tensor model's frames at ``times``, rounded as the pipeline rounds them."""
    out = Classic(scale=scale)(to_tensor(frames, torch.device("cpu")).unsqueeze(0), times=[float(t) for t in times])
    return list(to_arrays(out[0], frames[0].dtype))


def level_psnr(a: np.ndarray, b: np.ndarray) -> float:
    peak = 255.0 if a.dtype == np.uint8 else 65535.0
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("scale", [2, 4])
def test_the_frames_are_the_tensor_models_to_rounding(dtype, scale):
    frames = [textured(i, 27, 37, dtype) for i in range(4)]  # odd sizes, and 2 % of the pixels at an edge
    times = [Fraction(0), Fraction(1, 2), Fraction(1), Fraction(4, 3), Fraction(5, 2), Fraction(3)]
    made = ClassicFrames(scale).frames_at(frames, times)
    for t, got, want in zip(times, made, reference(frames, times, scale), strict=True):
        assert got.shape == want.shape == (27 * scale, 37 * scale, 3) and got.dtype == dtype
        # Rounding: a frame at an input's time is 1 level off in a few percent of its pixels; a blend of
        # two rounded frames is rounded again, 1 level off in about a quarter of them.
        assert level_psnr(got, want) > (60 if t == int(t) else 53)
        assert np.abs(got.astype(np.int64) - want).max() <= 2 * (257 if dtype == np.uint16 else 1)


def test_an_input_time_is_the_upscaled_frame_itself_and_the_edges_repeat():
    """Output at an input's time is that frame upscaled, nothing blended in; a flat picture stays flat
    to its edges (the scaler repeats border pixels, as PyTorch's bicubic does)."""
    frames = [np.full((8, 10, 3), 37, np.uint8), np.full((8, 10, 3), 201, np.uint8)]
    first, middle, last = ClassicFrames(4).frames_at(frames, [Fraction(0), Fraction(1, 2), Fraction(1)])
    assert (first == 37).all() and (last == 201).all()
    assert (middle == 119).all()  # (37 + 201) / 2


def test_the_integer_blend_is_the_float_blend_to_half_a_level():
    rng = np.random.default_rng(0)
    left, right = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    for weight in (1, 64, 85, 128, 200, 255):
        exact = (1 - weight / 256) * left + weight / 256 * right
        got = blend_integer(left, right, weight)
        assert np.abs(got - exact).max() <= 0.5 + 1e-9
    assert np.array_equal(blend_integer(left, right, 128), ((left.astype(int) + right + 1) // 2).astype(np.uint8))


def count_scaler_calls(monkeypatch) -> list[int]:
    calls = []
    original = classic_frames._Scaler.__call__

    def counted(self, frame):
        calls.append(id(frame))
        return original(self, frame)

    monkeypatch.setattr(classic_frames._Scaler, "__call__", counted)
    return calls


def test_each_input_frame_is_upscaled_once_across_windows(monkeypatch):
    calls = count_scaler_calls(monkeypatch)
    frames = [textured(i, 16, 20) for i in range(15)]
    plan = plan_windows(len(frames), window=8, overlap=1, fps_x=2)
    made: list[np.ndarray] = []
    run_windows(frames, plan, ClassicFrames(2), made.append)
    assert len(made) == 30 and len(calls) == 15 and len(set(calls)) == 15
    tensor_model = load_model(load_registry().get("classic"), scale=2, device="cpu")
    expected: list[np.ndarray] = []
    run_windows(frames, plan, tensor_model, expected.append)
    assert min(level_psnr(a, b) for a, b in zip(made, expected, strict=True)) > 53


def test_upscale_with_classic_on_the_cpu_makes_the_reference_frames(tmp_path, monkeypatch):
    """End to end through a lossless RGB encode: upscale takes the array path, and its output is the
    tensor model's frames to rounding."""
    calls = count_scaler_calls(monkeypatch)
    src, dst = tmp_path / "in.mkv", tmp_path / "out.mkv"
    make_video(src, frames=5, size=(40, 24), codec="ffv1", pix_fmt="bgr0")  # decoded exactly
    lossless = EncodeSettings(codec="ffv1", pix_fmt="bgr0")
    result = upscale(src, dst, model="classic", device="cpu", encode=lossless, scene_detect=False)
    assert result.frames_out == 10 and len(calls) == 5
    inputs = read_frames(src)
    times = [Fraction(j, 2) for j in range(9)] + [Fraction(4)]  # the last output holds the last frame
    made = read_frames(dst)
    assert len(made) == 10
    for got, want in zip(made, reference(inputs, times, 4), strict=True):
        assert level_psnr(got, want) > 53


def test_a_classic_run_does_not_import_pytorch(tmp_path):
    """PyTorch costs seconds and hundreds of MB to import; upscale with classic on the CPU needs none."""
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_video(src, frames=4, size=(32, 24))
    script = (
        "import sys\n"
        "from stvsr_cli.api import upscale\n"
        f"result = upscale({str(src)!r}, {str(dst)!r}, model='classic', scene_detect=False)\n"
        "print(result.device, result.frames_out, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["cpu", "8", "False"]


def test_bench_times_what_upscale_runs_for_classic_on_the_cpu(monkeypatch):
    from stvsr_cli.bench import bench

    calls = count_scaler_calls(monkeypatch)
    window = load_registry().get("classic").window
    r = bench("classic", size=(32, 24), frames=4, device="cpu", calls=1)
    assert len(calls) == 3 * window + 4  # warm-up, FLOP count and one timed call; then the 4-frame clip
    assert r.model_useful_fps > 0 and r.flops_per_call == 0  # no products or convolutions to count


def test_options_that_size_a_network_are_named_once_when_classic_runs_without_one(tmp_path):
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_video(src, frames=4, size=(32, 24))
    args = ["upscale", str(src), str(dst), "-m", "classic", "--tile", "64", "--compile", "--batch-windows", "2", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    line = "--tile, --compile, --batch-windows: no effect with model 'classic' on the CPU"
    assert result.stderr.count(line) == 1 and json.loads(result.stdout)["warnings"] == [line]
    plain = CliRunner().invoke(main, ["upscale", str(src), str(dst), "-m", "classic", "--overwrite", "--json"])
    assert json.loads(plain.stdout)["warnings"] == []


@pytest.mark.parametrize("dtype, pix_fmt", [(np.uint8, "yuv420p"), (np.uint16, "yuv420p10le")])
def test_the_encoders_planes_are_its_own_conversion_of_the_rgb_frames(dtype, pix_fmt):
    """Where the encoder takes planar YUV, classic gives its planes: an input's time as the encoder
    converts the RGB frame (exactly in 8 bits; in 10, swscale's planar and packed RGB inputs round
    chroma differently, up to 5 of 1023 levels on this noise); an in-between frame blended on the
    planes, a level more from the conversion of the RGB blend."""
    from stvsr_cli.io.colour import stream_colour
    from stvsr_cli.io.encode import Planes
    from stvsr_cli.io.colour import plane_samples

    colour = stream_colour(pix_fmt, 148, 108, 1, 1, 1, 1)  # BT.709, limited range
    frames = [textured(i, 27, 37, dtype) for i in range(3)]
    times = [Fraction(0), Fraction(1, 3), Fraction(1, 2), Fraction(2)]
    rgb = ClassicFrames(4).frames_at(frames, times)
    runner = ClassicFrames(4)
    runner.encode_as(pix_fmt, colour)
    for t, planes, picture in zip(times, runner.frames_at(frames, times), rgb, strict=True):
        assert isinstance(planes, Planes) and planes.pix_fmt == pix_fmt
        rgb_fmt = "rgb24" if dtype == np.uint8 else "rgb48le"
        frame = av.VideoFrame.from_ndarray(picture, rgb_fmt).reformat(format=pix_fmt, **colour.reformat_args(decoding=False))
        for i, (got, plane) in enumerate(zip(planes.arrays, frame.planes, strict=True)):
            want = plane_samples(plane, dtype)
            assert got.shape == want.shape and got.dtype == dtype
            routes = 5 if (i and dtype == np.uint16) else 0
            assert np.abs(got.astype(np.int64) - want).max() <= routes + (t != int(t))


def test_a_grey_shot_gets_neutral_chroma_on_the_planes():
    from stvsr_cli.io.encode import Planes
    from stvsr_cli.pipeline.grey import grey_frame

    y = np.full((4, 6), 90, np.uint8)
    uv = np.full((2, 3), 140, np.uint8)
    grey = grey_frame(Planes("yuv420p", (y, uv, uv.copy())))
    assert (grey.arrays[0] == 90).all() and (grey.arrays[1] == 128).all() and (grey.arrays[2] == 128).all()
    deep = grey_frame(Planes("yuv420p10le", (y.astype(np.uint16), uv.astype(np.uint16), uv.astype(np.uint16))))
    assert (deep.arrays[1] == 512).all() and (deep.arrays[2] == 512).all()


def test_upscale_hands_the_encoder_planes_that_match_the_rgb_route(tmp_path, monkeypatch):
    """End to end in lossless YUV: the frames given as planes (the encoder converts nothing) decode to
    the RGB route's frames: the same at the input frames' times (converted with the source's chroma
    siting, as the encoder converts), to a level in between."""
    from stvsr_cli.io.encode import FrameEncoder, Planes

    src = tmp_path / "in.mp4"
    make_video(src, frames=5, size=(40, 24))  # x264: its frames carry their chroma siting, to be kept
    lossless = EncodeSettings(codec="ffv1", pix_fmt="yuv420p")
    kinds = []
    encode = FrameEncoder.encode
    monkeypatch.setattr(FrameEncoder, "encode", lambda self, frame: kinds.append(type(frame)) or encode(self, frame))
    upscale(src, tmp_path / "planes.mkv", model="classic", device="cpu", encode=lossless, scene_detect=False)
    assert kinds == [Planes] * 10
    kinds.clear()
    monkeypatch.setattr(ClassicFrames, "encode_as", lambda self, pix_fmt, colour, source=None: None)  # the RGB route
    upscale(src, tmp_path / "rgb.mkv", model="classic", device="cpu", encode=lossless, scene_detect=False)
    assert kinds == [np.ndarray] * 10
    planes, rgb = read_frames(tmp_path / "planes.mkv", "yuv420p"), read_frames(tmp_path / "rgb.mkv", "yuv420p")
    assert len(planes) == len(rgb) == 10
    for j, (a, b) in enumerate(zip(planes, rgb, strict=True)):
        worst = np.abs(a.astype(np.int64) - b).max()
        assert worst == 0 if j % 2 == 0 else worst <= 1
