"""How a training run hears that it should stop."""

from __future__ import annotations

import signal


def stop_on_signals() -> None:
    """Make a kill (SIGTERM), and Ctrl-C even where a shell started us with it ignored, raise
    ``KeyboardInterrupt``: the trainer then saves a checkpoint that ``--resume`` continues from."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
