"""Seconds per stage of a run (decode, colour conversion, upload, model, download, encode), for
``stvsr bench``: a ``StageClock`` handed down to the reader, the run loop and the encoder."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

# In the order a frame meets them.
STAGES = ("decode", "to RGB", "upload", "model", "download", "to YUV", "encode")


class StageClock:
    """Sums the time spent in each stage, from any thread. Stages in the decoder's and the
    encoder's threads overlap the model's, so the sum can exceed the run's wall time. ``sync``
    (e.g. ``torch.cuda.synchronize``) ends each timed block, so that asynchronous GPU work is
    counted in the stage that queued it, at the price of that overlap."""

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.sync = sync
        self.seconds: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            if self.sync is not None and stage in ("upload", "model", "download"):
                self.sync()
            spent = time.perf_counter() - began
            with self._lock:
                self.seconds[stage] += spent

    def table(self) -> dict[str, float]:
        """Seconds per stage, in ``STAGES`` order (stages never entered are left out)."""
        return {stage: round(self.seconds[stage], 4) for stage in STAGES if stage in self.seconds}


def clock_or_nothing(clock: StageClock | None) -> Callable:
    """``clock``, or a stand-in that times nothing (``nullcontext(stage)``)."""
    return clock or nullcontext
