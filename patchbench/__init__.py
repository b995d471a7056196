"""patchbench: which features does a network learn first, the memorizable patch or the image?"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("patchbench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

import pluggy

hookimpl = pluggy.HookimplMarker("patchbench")
"""Decorator that marks a function in a plugin module as a patchbench hook implementation."""

__all__ = ["__version__", "hookimpl"]
