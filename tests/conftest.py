import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/media.py

from media import make_video  # noqa: E402


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path_factory):
    """No test reaches a real host: an empty cache, downloads off, the hub pointed at a closed port.
    Download tests turn downloads back on and point at tests/fakehub.py."""
    monkeypatch.setenv("STVSR_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")


@pytest.fixture
def one_thread():
    """One torch thread: tiny networks are thousands of small ops, and a second thread only adds
    synchronisation (ten times over on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def clip(tmp_path):
    """An ordinary H.264 .mp4 with AAC audio: 10 frames at 25 fps, 32x24."""
    path = tmp_path / "clip.mp4"
    make_video(path, frames=10, rate=25, audio=True)
    return path
