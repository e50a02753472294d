"""Bundled configuration defaults and conversation flows shipped with Confab."""

import importlib.resources
import pathlib


def bundled_path(name: str) -> pathlib.Path:
    """Return the filesystem path of bundled config file ``name`` (e.g. ``"flows/x.yaml"``)."""
    return pathlib.Path(str(importlib.resources.files(__package__ or __name__) / name))
