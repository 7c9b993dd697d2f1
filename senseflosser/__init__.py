"""senseflosser: deteriorate the senses of a pretrained audio autoencoder and listen.

Importing the package registers its custom Keras layers, so flossed models
load with ``keras.models.load_model`` afterwards.
"""

from __future__ import annotations

import os

# TensorFlow's start-up chatter off unless the user asked for it (before Keras loads it).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from . import bends, layers  # noqa: E402,F401  (registers custom layers for keras.models.load_model)
from .errors import AudioError, ModelError, RecipeError, SenseflosserError, TrainingError
from .jobspec import JobSpec, Outputs, build_job
from .legacy import run_senseflosser
from .pipeline import FlossResult, floss
from .recipe import ACTIONS, DEFAULT_TITRATION, Recipe

__version__ = "0.1.0"

__all__ = [
    "ACTIONS",
    "DEFAULT_TITRATION",
    "AudioError",
    "FlossResult",
    "JobSpec",
    "ModelError",
    "Outputs",
    "Recipe",
    "RecipeError",
    "SenseflosserError",
    "TrainingError",
    "build_job",
    "floss",
    "run_senseflosser",
]
