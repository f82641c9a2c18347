"""Where to put the scene-cut threshold: scores inside real shots against scores at real cuts.

Scores every frame of the clips in ../shared/data (single shots, apart from two cuts in bikes),
then scores made-up hard cuts: the last 3 frames of one clip followed by the first 3 of another
(every ordered pair of clips from different sources). Prints the distributions.

    python benchmarks/scene_threshold.py ../shared/data/train ../shared/data/eval
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Interpolation

from stvsr_cli.io.decode import thumbnail_size
from stvsr_cli.pipeline.scenes import DEFAULT_SCENE_THRESHOLD, cut_scores


def thumbnails(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        size = thumbnail_size(stream.codec_context.width, stream.codec_context.height)
        return [
            f.to_ndarray(width=size[0], height=size[1], format="gray", interpolation=Interpolation.AREA)
            for f in container.decode(stream)
        ]


def source_of(path: Path) -> str:
    """Clips cut from one video (vimeo septuplets of one sequence) count as one source."""
    return path.stem.rsplit("_", 1)[0] if path.stem.startswith("vimeo") else path.stem


def main(folders: list[str]) -> None:
    clips = sorted(p for folder in folders for p in Path(folder).iterdir() if p.suffix in (".mp4", ".mkv"))
    thumbs = {clip: thumbnails(clip) for clip in clips}
    inside, found = [], []
    for clip, frames in thumbs.items():
        scores = list(cut_scores(frames))
        high = [i for i, s in enumerate(scores) if s > DEFAULT_SCENE_THRESHOLD]
        found += [f"{clip.name} frame {i} ({scores[i]:.1f})" for i in high]
        inside += [s for i, s in enumerate(scores) if i > 0 and i not in high]
    made_up = []
    firsts = {}
    for clip in clips:
        firsts.setdefault(source_of(clip), clip)  # one clip per source
    for a, b in itertools.permutations(firsts.values(), 2):
        h = min(thumbs[a][0].shape[0], thumbs[b][0].shape[0])  # thumbnails are 64 wide; heights differ
        made_up.append(list(cut_scores([t[:h] for t in thumbs[a][-3:] + thumbs[b][:3]]))[3])
    inside, made_up = np.array(inside), np.array(made_up)
    print(f"{len(clips)} clips, {sum(map(len, thumbs.values()))} frames; threshold {DEFAULT_SCENE_THRESHOLD}")
    print(f"cuts found: {', '.join(found) or 'none'}")
    print(f"frame scores inside shots: max {inside.max():.2f}, 99.9th percentile {np.quantile(inside, 0.999):.2f}")
    print(
        f"made-up cuts between {len(firsts)} sources ({len(made_up)} pairs): min {made_up.min():.2f}, "
        f"1st percentile {np.quantile(made_up, 0.01):.2f}, missed at the threshold {np.mean(made_up <= DEFAULT_SCENE_THRESHOLD):.1%}"
    )


if __name__ == "__main__":
    main(sys.argv[1:] or ["../shared/data/train", "../shared/data/eval"])
