"""Issue 24: the encoder's YUV planes made on the model's device, and copies that overlap the model.
Everything runs on the CPU here (the same PyTorch code as on a GPU); the CUDA side is in test_cuda.py."""

from fractions import Fraction
from io import BytesIO

import av
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from media import make_video, pattern, read_frames, smooth

from stvsr_cli.api import upscale
from stvsr_cli.cli import main
from stvsr_cli.io.colour import AVCOL_RANGE_JPEG, AVCOL_RANGE_MPEG, AVCOL_SPC_BT709, stream_colour
from stvsr_cli.io.decode import probe
from stvsr_cli.io.encode import EncodeSettings, FrameEncoder, Planes, rgb_template, encoder_pixels
from stvsr_cli.models.loader import load_model
from stvsr_cli.models.registry import load_registry
from stvsr_cli.pipeline.planes import plane_layout, rgb_to_planes, split_planes
from stvsr_cli.pipeline.run import run_windows
from stvsr_cli.pipeline.transfer import Transfers, to_arrays
from stvsr_cli.pipeline.windows import plan_windows

H, W = 48, 64


def swscale_planes(info, rgb: np.ndarray, pix_fmt: str, colour) -> list[np.ndarray]:
    """What the RGB path gives the encoder: swscale from a template carrying the source's tags."""
    fmt = "rgb24" if rgb.dtype == np.uint8 else "rgb48le"
    template = rgb_template(info, rgb.shape[1], rgb.shape[0], fmt)
    view = np.frombuffer(template.planes[0], dtype=rgb.dtype).reshape(template.planes[0].height, -1)
    view[:, : rgb.shape[1] * 3] = rgb.reshape(rgb.shape[0], -1)
    out = template.reformat(format=pix_fmt, **colour.reformat_args(decoding=False))
    dtype = np.uint8 if rgb.dtype == np.uint8 else np.uint16
    planes = []
    for i, plane in enumerate(out.planes):
        rows = np.frombuffer(plane, dtype=dtype).reshape(plane.height, -1)
        planes.append(rows[:, : plane.width].astype(int))
    return planes


def device_planes(rgb: np.ndarray, layout) -> tuple:
    peak = 255.0 if rgb.dtype == np.uint8 else 65535.0
    frames = torch.from_numpy(rgb.astype(np.float32) / peak).permute(2, 0, 1)[None]
    return split_planes(rgb_to_planes(frames, layout).numpy(), layout)[0].arrays


@pytest.fixture(scope="module")
def h264_info(tmp_path_factory):
    path = tmp_path_factory.mktemp("planes") / "src.mp4"
    make_video(path, frames=2, size=(W // 2, H // 2))
    return probe(path)


def test_layouts_of_planar_yuv_and_none_for_the_rest():
    limited = stream_colour("yuv420p", W, H, 1, 1, AVCOL_SPC_BT709, AVCOL_RANGE_MPEG)
    layout = plane_layout("yuv420p", limited, W, H)
    assert (layout.bits, layout.chroma_x_shift, layout.chroma_y_shift, layout.kr) == (8, 1, 1, 0.2126)
    assert not layout.full_range and layout.frame_bytes == W * H * 3 // 2  # 1.5 bytes a pixel
    deep = plane_layout("yuv422p10le", limited, W, H)
    assert (deep.bits, deep.chroma_y_shift, deep.frame_bytes) == (10, 0, W * H * 2 * 2)
    assert plane_layout("yuvj420p", limited, W, H).full_range
    assert plane_layout("yuv444p", limited, 7, 5).plane_shapes == [(5, 7)] * 3
    assert plane_layout("yuv420p", limited, 7, 5).chroma_size == (4, 3)
    for other in ("rgb24", "gbrp", "gray", "nv12", "yuv420p10be", "yuva420p"):
        assert plane_layout(other, limited, W, H) is None


@pytest.mark.parametrize(
    ("pix_fmt", "matrix", "range_"),
    [("yuv420p", 6, AVCOL_RANGE_MPEG), ("yuv420p", AVCOL_SPC_BT709, AVCOL_RANGE_JPEG), ("yuv444p", 6, AVCOL_RANGE_MPEG),
     ("yuv420p10le", AVCOL_SPC_BT709, AVCOL_RANGE_MPEG)],
)  # fmt: skip
def test_device_planes_match_what_swscale_gives_the_encoder(h264_info, pix_fmt, matrix, range_):
    colour = stream_colour(pix_fmt, W, H, 1, 1, matrix, range_)
    layout = plane_layout(pix_fmt, colour, W, H)
    deep = layout.bits > 8
    for content, chroma_max, chroma_mean in ((smooth, 1, 0.15), (pattern, 5, 1.0)):
        rgb = content(3, H, W)
        if deep:
            rgb = rgb.astype(np.uint16) * 257
        ref = swscale_planes(h264_info, rgb, pix_fmt, colour)
        mine = device_planes(rgb, layout)
        unit = 1 << (layout.bits - 8)
        assert [m.shape for m in mine] == [r.shape for r in ref]
        assert mine[0].dtype == (np.uint16 if deep else np.uint8)
        assert np.abs(mine[0] - ref[0]).max() <= unit  # luma: rounding only
        for m, r in zip(mine[1:], ref[1:]):
            diff = np.abs(m.astype(int) - r) / unit
            # Chroma: the same siting; the halving filters differ a little where colour changes fast.
            assert diff.max() <= chroma_max and diff.mean() < chroma_mean, (content.__name__, diff.max(), diff.mean())


def test_ten_bit_samples_come_back_whole():
    colour = stream_colour("yuv420p10le", 4, 2, 1, 1, AVCOL_SPC_BT709, AVCOL_RANGE_JPEG)
    layout = plane_layout("yuv420p10le", colour, 4, 2)
    white_black = torch.tensor([1.0, 1.0, 1.0, 0.0]).view(1, 1, 1, 4).expand(1, 3, 2, 4)
    y, u, v = split_planes(rgb_to_planes(white_black, layout).numpy(), layout)[0].arrays
    assert y.tolist() == [[1023, 1023, 1023, 0]] * 2  # above 255: both bytes of each sample kept
    assert u.shape == (1, 2) and set(u.ravel()) == set(v.ravel()) == {512}  # grey: neutral chroma


def test_planes_are_encoded_as_given():
    """Lossless x264 (qp 0): the decoded planes are the ones handed to the encoder."""
    rng = np.random.default_rng(1)
    planes = Planes(
        "yuv420p",
        (rng.integers(16, 236, (H, W), dtype=np.uint8), rng.integers(16, 241, (H // 2, W // 2), dtype=np.uint8),
         rng.integers(16, 241, (H // 2, W // 2), dtype=np.uint8)),
    )  # fmt: skip
    buffer = BytesIO()
    with av.open(buffer, "w", format="matroska") as container:
        stream = container.add_stream("libx264", rate=25, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        frame = av.VideoFrame(W, H, "yuv420p")
        for plane, samples in zip(frame.planes, planes.arrays):
            np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, -1)[:, : samples.shape[1]] = samples
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    buffer.seek(0)
    with av.open(buffer) as container:
        decoded = next(container.decode(video=0))
    for plane, samples in zip(decoded.planes, planes.arrays):
        rows = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, -1)[:, : samples.shape[1]]
        assert np.array_equal(rows, samples)


def test_frame_encoder_takes_planes_of_its_own_format_only(tmp_path):
    src = tmp_path / "src.mp4"
    make_video(src, frames=2, size=(32, 24))
    info = probe(src)
    size = {"width": 32, "height": 24, "rate": Fraction(25), "settings": EncodeSettings()}
    encoder = FrameEncoder("mp4", info, **size)
    layout = plane_layout(*encoder_pixels("mp4", info, **size), 32, 24)
    frames = torch.from_numpy(np.stack(read_frames(src))).permute(0, 3, 1, 2).float() / 255
    for planes in split_planes(rgb_to_planes(frames, layout).numpy(), layout):
        encoder.encode(planes)
    assert encoder.flush()  # packets came out
    wrong = Planes("yuv444p", (np.zeros((24, 32), np.uint8),) * 3)
    encoder = FrameEncoder("mp4", info, width=32, height=24, rate=Fraction(25), settings=EncodeSettings())
    with pytest.raises(ValueError, match="yuv444p"):
        encoder.encode(wrong)
    encoder.close()


class DeferredTransfers(Transfers):
    """The CPU's transfers, collected a call late as with a CUDA copy stream; logs the order."""

    def __init__(self, log: list) -> None:
        super().__init__(torch.device("cpu"))
        self.log = log

    @property
    def deferred(self) -> bool:
        return True

    def upload(self, frames):
        self.log.append("upload")
        return super().upload(frames)

    def download(self, frames, dtype):
        collect = super().download(frames, dtype)

        def logged():
            self.log.append("collect")
            return collect()

        return logged


@pytest.mark.parametrize("batch", [1, 2])
def test_deferred_downloads_emit_the_same_frames_in_order(batch):
    frames = [pattern(i, 12, 16) for i in range(11)]
    plan = plan_windows(len(frames), 4, 1, 2)
    model = load_model(load_registry().get("classic"), scale=2, device="cpu")
    plain, done_plain = [], []
    run_windows(frames, plan, model, plain.append, on_window_done=lambda w, f: done_plain.append((w, f)))
    log, late, done_late = [], [], []
    emitted = run_windows(
        frames, plan, model, late.append, batch_windows=batch, transfers=DeferredTransfers(log),
        on_window_done=lambda w, f: done_late.append((w, f)),
    )  # fmt: skip
    assert emitted == len(plain) == len(late)
    assert all(np.array_equal(a, b) for a, b in zip(plain, late))
    assert done_late == done_plain  # the same window boundaries, the same counts
    # Each call's frames are collected only after the next call is queued (its upload done).
    calls = log.count("upload")
    assert calls == log.count("collect") >= 2
    uploads_before = [log[:i].count("upload") for i, entry in enumerate(log) if entry == "collect"]
    assert uploads_before == [*range(2, calls + 1), calls]


def test_transfers_on_the_cpu_give_arrays_or_planes():
    frames = torch.rand(3, 3, 8, 10)
    transfers = Transfers(torch.device("cpu"))
    assert not transfers.deferred and not transfers.pinned
    arrays = transfers.download(frames, np.uint8)()
    assert np.array_equal(np.stack(arrays), to_arrays(frames, np.uint8))
    colour = stream_colour("yuv420p", 10, 8, 1, 1, 6, AVCOL_RANGE_MPEG)
    layout = plane_layout("yuv420p", colour, 10, 8)
    planes = Transfers(torch.device("cpu"), layout=layout).download(frames, np.uint8)()
    assert [p.arrays[1].shape for p in planes] == [(4, 5)] * 3 and planes[0].pix_fmt == "yuv420p"


def test_upscale_with_device_colour_on_the_cpu(tmp_path):
    src = tmp_path / "in.mp4"
    make_video(src, frames=6, size=(24, 16), content=smooth, audio=True)
    lossless = EncodeSettings(crf=0)
    options = {"model": "classic", "device": "cpu", "encode": lossless, "scene_detect": False}
    host = upscale(src, tmp_path / "host.mp4", **options)
    device = upscale(src, tmp_path / "device.mp4", device_colour=True, **options)
    assert host.frames_out == device.frames_out == 12
    a = np.stack(read_frames(tmp_path / "host.mp4")).astype(float)
    b = np.stack(read_frames(tmp_path / "device.mp4")).astype(float)
    psnr = 10 * np.log10(255**2 / ((a - b) ** 2).mean())
    assert psnr > 45, psnr  # the same picture, to rounding and the chroma filter


def test_device_colour_and_copy_stream_flags_on_the_cpu(tmp_path):
    src = tmp_path / "in.mp4"
    make_video(src, frames=4, size=(16, 12))
    out = tmp_path / "out.mp4"
    result = CliRunner().invoke(main, ["upscale", str(src), str(out), "-m", "classic", "--device-colour", "--quiet"])
    assert result.exit_code == 0, result.output
    assert out.is_file()
    result = CliRunner().invoke(
        main, ["upscale", str(src), str(tmp_path / "b.mp4"), "-m", "stvun", "--device", "cpu", "--copy-stream"]
    )
    assert result.exit_code == 2, result.output
    assert "--copy-stream needs a CUDA device" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "b.mp4").exists()
