"""Shipped lab and scenario files (YAML). ``certsim run NAME`` finds them here by name."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def shipped_dir() -> Path:
    """The folder of shipped scenarios (a real directory in both editable and wheel installs)."""
    return Path(str(files(__name__)))


def shipped() -> dict[str, Path]:
    """Shipped scenarios by name."""
    return {p.stem: p for p in sorted(shipped_dir().glob("*.yaml"))}
