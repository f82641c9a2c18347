"""stvsr: space-time video super-resolution from the command line and from Python."""

__version__ = "0.1.0"

from stvsr_cli.api import UpscaleResult, upscale  # noqa: E402

__all__ = ["UpscaleResult", "__version__", "upscale"]
