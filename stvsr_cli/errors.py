"""Errors the library raises. Only ``cli.py`` turns them into exit codes and stderr lines."""

from __future__ import annotations


class StvsrError(Exception):
    """A failure the user can understand and act on: a message, an optional hint, an exit code."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(StvsrError):
    """The command line asks for something that cannot work (exit 2)."""

    exit_code = 2


class UnknownModelError(UsageError):
    pass


class UnsupportedOptionError(UsageError):
    """A scale, time factor, window or codec option the chosen model or encoder cannot do."""


class InputError(StvsrError):
    """The input cannot be read as a video: missing, not a video, no video stream, corrupt."""


class OutputError(StvsrError):
    """The output cannot be written: exists, same as input, disk full, unwritable."""


class DeviceError(StvsrError):
    """The requested device (e.g. CUDA) is not available."""
