"""The original tool's import path: ``from senseflosser.utils import run_senseflosser``."""

from .legacy import run_senseflosser

__all__ = ["run_senseflosser"]
