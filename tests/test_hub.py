"""Weights: downloads from a fake hub and file host on 127.0.0.1, verification, cache, offline, import."""

import hashlib
import io

import pytest
import torch
from click.testing import CliRunner
from fakehub import FakeHub
from safetensors.torch import save_file

from stvsr_cli import hub
from stvsr_cli.cli import main
from stvsr_cli.models.loader import load_model
from stvsr_cli.models.registry import load_registry
from stvsr_cli.models.zsm import ZoomingSlowMo

REVISION = "0123456789abcdef0123456789abcdef01234567"
TINY = "{ nf = 16, groups = 8, front_rbs = 1, back_rbs = 1 }"


def tiny_state(seed=0):
    torch.manual_seed(seed)
    return ZoomingSlowMo(nf=16, groups=8, front_rbs=1, back_rbs=1).state_dict()


def safetensors_bytes(state) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in state.items()})


def pth_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def git_blob(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


@pytest.fixture
def online(monkeypatch):
    """Downloads allowed (the autouse fixture turns them off), huggingface_hub included."""
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def registry_with(tmp_path, monkeypatch, entry: str):
    path = tmp_path / "models.toml"
    path.write_text(f'[models.tiny]\narch = "zsm"\nparams = {TINY}\nscale = 4\nfps_x = 2\nwindow = 3\n{entry}\n')
    monkeypatch.setenv("STVSR_REGISTRY", str(path))
    return load_registry().get("tiny")


def weights_cli(*args):
    return CliRunner().invoke(main, ["weights", *map(str, args)])


def frames():
    return torch.rand(2, 3, 8, 12, generator=torch.Generator().manual_seed(5))


def outputs(model):
    return model(frames(), 2)


def test_git_blob_id_is_what_git_computes(tmp_path):
    path = tmp_path / "hello"
    path.write_bytes(b"hello")
    assert hub.git_blob_sha1(path) == "b6fc4c620b67d95f953a5c1c1230aaab5db5a1b0"  # git hash-object


def test_hub_download_is_verified_cached_and_then_works_offline(tmp_path, monkeypatch, online):
    data = safetensors_bytes(tiny_state())
    with FakeHub() as fake:
        fake.repo_files[("me/models", REVISION, "zsm/tiny.safetensors")] = data
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        spec = registry_with(
            tmp_path, monkeypatch,
            f'weights = "hf://me/models/zsm/tiny.safetensors@{REVISION}"\nsha256 = "{hashlib.sha256(data).hexdigest()}"',
        )  # fmt: skip
        assert not hub.available(spec)
        result = weights_cli("download", "tiny")
        assert result.exit_code == 0, result.stderr
        cached = hub.cached_path(spec)
        assert result.stdout.strip() == str(cached) and hub.available(spec)
        gets = [r for r in fake.requests if r[0] == "GET"]
        assert len(gets) == 1 and gets[0][1].endswith("/resolve/" + REVISION + "/zsm/tiny.safetensors")
        # From now on no network at all.
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        before = len(fake.requests)
        model = load_model(spec, scale=4, device="cpu")
        assert len(fake.requests) == before
    assert weights_cli("verify", "tiny").stdout.startswith("tiny: ok")
    assert weights_cli("path", "tiny").stdout.strip() == str(cached)
    reference = ZoomingSlowMo(nf=16, groups=8, front_rbs=1, back_rbs=1).eval()
    reference.load_state_dict(tiny_state())
    with torch.no_grad():
        torch.testing.assert_close(outputs(model), reference(frames()[None])[0].clamp(0, 1))


def test_interrupted_https_download_resumes(tmp_path, monkeypatch, online):
    data = pth_bytes(dict(tiny_state()))
    with FakeHub() as fake:
        fake.plain_files["tiny.pth"] = data
        fake.cut_after["/files/tiny.pth"] = len(data) // 3
        spec = registry_with(
            tmp_path, monkeypatch,
            f'weights = "{fake.url}/files/tiny.pth"\ngit_blob_sha1 = "{git_blob(data)}"\nformat = "zsm-official-pth"',
        )  # fmt: skip
        first = weights_cli("download", "tiny")
        assert first.exit_code == 1 and "cut short" in first.stderr and "again to resume" in first.stderr
        second = weights_cli("download", "tiny")
        assert second.exit_code == 0, second.stderr
        ranges = [r[2] for r in fake.requests if r[0] == "GET"]
        assert ranges == [None, f"bytes={len(data) // 3}-"]  # the second request asked only for the rest
    assert hub.available(spec) and hub.verify(spec).startswith("ok")
    assert not list((hub.cache_dir() / "downloads").iterdir())  # the converted copy is all that is kept


def test_tampered_download_is_refused_and_deleted(tmp_path, monkeypatch, online):
    good = safetensors_bytes(tiny_state())
    with FakeHub() as fake:
        fake.plain_files["tiny.safetensors"] = good[:-1] + bytes([good[-1] ^ 1])
        spec = registry_with(
            tmp_path, monkeypatch,
            f'weights = "{fake.url}/files/tiny.safetensors"\nsha256 = "{hashlib.sha256(good).hexdigest()}"',
        )  # fmt: skip
        result = weights_cli("download", "tiny")
    assert result.exit_code == 1 and "is not the weights file of model 'tiny'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not hub.available(spec)
    assert not any(p.is_file() for p in hub.cache_dir().rglob("*"))  # nothing unverified kept


def test_offline_without_cache_names_the_import_command(tmp_path, monkeypatch, clip):
    registry_with(tmp_path, monkeypatch, 'weights = "https://example.invalid/tiny.pth"\nsha256 = "' + "0" * 64 + '"')
    result = CliRunner().invoke(main, ["upscale", str(clip), str(tmp_path / "out.mp4"), "--model", "tiny"])
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert "not in the cache" in result.stderr and "stvsr weights import tiny" in result.stderr
    assert not (tmp_path / "out.mp4").exists()


def test_official_checkpoint_import_gives_the_same_outputs_as_safetensors(tmp_path, monkeypatch):
    state = tiny_state(3)
    # The authors' layout: a plain state dict; training wrappers (DataParallel's "module.") are unwrapped.
    official = tmp_path / "xiang2020zooming.pth"
    official.write_bytes(pth_bytes({f"module.{k}": v for k, v in state.items()}))
    spec = registry_with(
        tmp_path, monkeypatch,
        'weights = "https://example.invalid/xiang2020zooming.pth"\n'
        f'git_blob_sha1 = "{hub.git_blob_sha1(official)}"\nformat = "zsm-official-pth"',
    )  # fmt: skip
    result = weights_cli("import", "tiny", official)
    assert result.exit_code == 0, result.stderr
    imported = load_model(spec, scale=4, device="cpu", offline=True)
    save_file(dict(state), str(tmp_path / "same.safetensors"))
    direct = load_model(spec, scale=4, device="cpu", weights=tmp_path / "same.safetensors")
    torch.testing.assert_close(outputs(imported), outputs(direct), atol=0, rtol=0)
    other = load_model(spec, scale=4, device="cpu", weights=tmp_path / "xiang2020zooming.pth")  # --weights FILE
    torch.testing.assert_close(outputs(other), outputs(direct), atol=0, rtol=0)


def test_import_refuses_a_file_with_another_hash(tmp_path, monkeypatch):
    stray = tmp_path / "stray.pth"
    stray.write_bytes(pth_bytes(dict(tiny_state())))
    registry_with(tmp_path, monkeypatch, f'weights = "https://example.invalid/w.pth"\nsha256 = "{"ab" * 32}"')
    result = weights_cli("import", "tiny", stray)
    assert result.exit_code == 1 and "is not the weights file" in result.stderr


class Payload:
    """Unpickling this would run code: torch.load(weights_only=True) must refuse it."""

    def __reduce__(self):
        return (print, ("code ran",))


def test_checkpoints_that_would_run_code_are_refused(tmp_path, monkeypatch, capfd):
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pth_bytes({"conv_first.weight": Payload()}))
    spec = registry_with(tmp_path, monkeypatch, "")
    with pytest.raises(hub.WeightsError, match="only plain tensors"):
        load_model(spec, scale=4, device="cpu", weights=evil)
    assert "code ran" not in capfd.readouterr().out


def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path, monkeypatch):
    wrong = tmp_path / "wrong.safetensors"
    save_file({"conv_first.weight": torch.zeros(1)}, str(wrong))
    spec = registry_with(tmp_path, monkeypatch, "")
    with pytest.raises(hub.WeightsError, match="does not fit model 'tiny'"):
        load_model(spec, scale=4, device="cpu", weights=wrong)


def test_verify_finds_a_damaged_cache(tmp_path, monkeypatch):
    official = tmp_path / "w.pth"
    official.write_bytes(pth_bytes(dict(tiny_state())))
    spec = registry_with(
        tmp_path,
        monkeypatch,
        f'weights = "https://example.invalid/w.pth"\ngit_blob_sha1 = "{hub.git_blob_sha1(official)}"',
    )
    cached = hub.import_weights(spec, official)
    with open(cached, "r+b") as f:
        f.seek(200)
        f.write(b"\0\0\0\0")
    result = weights_cli("verify", "tiny")
    assert result.exit_code == 1 and "damaged" in result.stdout
    with pytest.raises(hub.WeightsError, match="not in the cache"):
        hub.weights_file(spec, offline=True)  # a damaged file is dropped, not loaded
    assert not cached.exists()


def test_parse_hub_address():
    assert hub.parse_hf("hf://me/models/a/b.safetensors@v1") == hub.HubFile("me/models", "a/b.safetensors", "v1")
    with pytest.raises(hub.WeightsError):
        hub.parse_hf("hf://me/file.safetensors")
