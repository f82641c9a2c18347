"""The sink stage: output frames encoded into resumable segments in a worker thread, then joined.

``ThreadedSink`` hands items to one worker thread in order, through a bounded queue: the model (on
the GPU, or on other CPU cores) never waits for x264, and the bound keeps memory flat when the
encoder is the slower side. An exception in the worker surfaces in the caller at its next ``put``
or at ``close``; ``abort`` drops what is queued (Ctrl-C). ``Segments`` gathers the encoded frames
into segments saved in the work folder; ``OutputSink`` puts the two together.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stvsr_cli.io.decode import VideoInfo
from stvsr_cli.io.encode import EncodeSettings, FrameEncoder, Planes, join_segments, reorder_delay
from stvsr_cli.io.workdir import WorkFolder
from stvsr_cli.pipeline.stages import StageClock

SEGMENT_SECONDS = 60.0  # a segment also closes after this much work: a kill loses at most about a minute
_DONE = object()


class ThreadedSink:
    def __init__(self, handle: Callable[[Any], None], *, maxsize: int = 16, name: str = "stvsr-encode") -> None:
        self._handle = handle
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE or self._stop.is_set():
                return
            try:
                self._handle(item)
            except BaseException as exc:  # handed to the caller
                self._error = exc
                self._stop.set()
                return

    def put(self, item: Any) -> None:
        """Queue ``item``; blocks while the queue is full; raises the worker's error if it failed."""
        while True:
            self._raise_error()
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Wait until every queued item is handled; raise the worker's error, if any."""
        if self._thread.is_alive():
            self.put(_DONE)
            self._thread.join()
        self._raise_error()

    def abort(self) -> None:
        """Stop without handling what is still queued."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                pass
            try:
                self._queue.put_nowait(_DONE)
            except queue.Full:
                pass
            self._thread.join(timeout=0.05)

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


class InlineSink:
    """``ThreadedSink``'s interface, handling each item at once in the caller's thread: the plain
    baseline that benchmarks measure the threaded encoder against."""

    def __init__(self, handle: Callable[[Any], None]) -> None:
        self._handle = handle

    def put(self, item: Any) -> None:
        self._handle(item)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class Segments:
    """Encoded output frames gathered into segments and saved in ``work``. A segment closes at a
    window boundary (so a resumed run recomputes exactly the same frames) once it holds
    ``max_frames`` frames or ``max_seconds`` of work (by ``clock``) went into it, whichever is first.
    ``size`` holds the output's ``width``, ``height`` and ``rate``."""

    def __init__(
        self, work: WorkFolder, *, fmt: str, info: VideoInfo, settings: EncodeSettings, size: dict[str, Any],
        max_frames: int, max_seconds: float = SEGMENT_SECONDS, clock: Callable[[], float] = time.monotonic,
        stage_clock: StageClock | None = None,
    ) -> None:  # fmt: skip
        self.work, self.fmt, self.info, self.settings, self.size = work, fmt, info, settings, size
        self.stage_clock = stage_clock
        self.max_frames, self.max_seconds, self.clock = max_frames, max_seconds, clock
        self.encoder: FrameEncoder | None = None
        self.packets: list = []
        self.frames = 0
        self.windows = work.done_windows  # windows done so far, this run's and the earlier one's
        self.templates: dict = {}  # shared by the segments' encoders
        self.opened = clock()  # when the work on the current segment began
        # The first segment's encoder opens now: a codec, pixel format or option the output cannot
        # take fails in one line before the model runs, not after its first window.
        self.encoder = self._open_encoder()

    def _open_encoder(self) -> FrameEncoder:
        return FrameEncoder(
            self.fmt, self.info, settings=self.settings, first_frame=self.work.done_frames,
            templates=self.templates, clock=self.stage_clock, **self.size,
        )  # fmt: skip

    def add(self, rgb: np.ndarray | Planes) -> None:
        if self.encoder is None:
            self.encoder = self._open_encoder()
        self.packets += self.encoder.encode(rgb)
        self.frames += 1

    def window_done(self, windows: int) -> None:
        self.windows = windows
        if self.frames >= self.max_frames or (self.frames and self.clock() - self.opened >= self.max_seconds):
            self._close()

    def finish(self) -> None:
        if self.frames:
            self._close()

    def join(self, dst: Path) -> list[str]:
        """Write ``dst`` from every segment and the source's side streams; warnings about those."""
        work = self.work
        firsts = (next(work.packets(s), None) for s in work.segments)  # each segment's first packet
        delay = reorder_delay(p for p in firsts if p is not None)
        segments = (work.packets(s) for s in work.segments)
        return join_segments(
            dst, self.info, segments, settings=self.settings, extradata=work.extradata, delay=delay, **self.size
        )

    def _close(self) -> None:
        self.packets += self.encoder.flush()
        windows = self.windows - self.work.done_windows
        self.work.add_segment(self.packets, windows=windows, frames=self.frames, extradata=self.encoder.extradata)
        self.encoder, self.packets, self.frames = None, [], 0
        self.opened = self.clock()


class OutputSink:
    """Output frames, in order, to ``segments``: in a worker thread (``threaded``), else inline."""

    def __init__(self, segments: Segments, *, threaded: bool = True) -> None:
        self.segments = segments
        self._worker = ThreadedSink(self._handle) if threaded else InlineSink(self._handle)

    @staticmethod
    def _handle(call: tuple) -> None:
        call[0](*call[1:])

    def frame(self, rgb: np.ndarray | Planes) -> None:
        self._worker.put((self.segments.add, rgb))

    def window_done(self, windows: int, frames: int) -> None:
        self._worker.put((self.segments.window_done, windows))

    def close(self) -> None:
        """Close the last segment and wait for the worker; raises what failed there."""
        self._worker.put((self.segments.finish,))
        self._worker.close()

    def stop(self, exc: BaseException) -> None:
        """After ``exc`` in the run: on Ctrl-C the frames already queued still go in (a segment they
        finish is kept), the unfinished segment does not; after anything else the queue is dropped."""
        if not isinstance(exc, KeyboardInterrupt):
            self._worker.abort()
            return
        try:
            self._worker.close()
        except BaseException:  # the encoder failed too: what Ctrl-C interrupted is what the user hears of
            self._worker.abort()
