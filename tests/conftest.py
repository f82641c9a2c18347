import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/media.py

from media import make_video  # noqa: E402


@pytest.fixture
def clip(tmp_path):
    """An ordinary H.264 .mp4 with AAC audio: 10 frames at 25 fps, 32x24."""
    path = tmp_path / "clip.mp4"
    make_video(path, frames=10, rate=25, audio=True)
    return path
