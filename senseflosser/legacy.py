"""The original tool's module entry point, kept for people who imported it."""

from __future__ import annotations

import os
from pathlib import Path

from .models import ModelRegistry
from .recipe import DEFAULT_TITRATION


def run_senseflosser(
    model_file: str | os.PathLike,
    magnitude: float,
    action: str,
    input_file: str | os.PathLike,
    output_dir: str | os.PathLike,
    duration: float | None = None,
    titrate: bool = False,
    save_model: bool = False,
) -> list[str]:
    """Floss one file the way the original ``run_senseflosser`` did.

    Parameters
    ----------
    model_file : str or os.PathLike
        A registry model name or a ``.keras`` / ``.h5`` file.
    magnitude : float
        Damage strength in [0, 1] (ignored when ``titrate``).
    action : {"fog", "lapse"}
    input_file : str or os.PathLike
        Audio file.
    output_dir : str or os.PathLike
        Where the outputs go (created if needed).
    duration : float or None
        Seconds of audio to process from the start; ``None`` = all.
    titrate : bool
        Use the default magnitudes 0.01, 0.05, 0.1, 0.2, 0.5 instead.
    save_model : bool
        Also save each flossed model as ``.keras`` in ``output_dir``.

    Returns
    -------
    list of str
        Paths of the WAV files written: the normal output first, then one per
        magnitude. Unlike the original, a random seed is drawn and recorded
        in the recipe JSON written beside each output.
    """
    from .render import floss_to_dir

    mags = list(DEFAULT_TITRATION) if titrate else [magnitude]
    out = Path(output_dir)
    manifest = floss_to_dir(
        input_file, registry=ModelRegistry(), model=str(model_file), action=action,
        magnitudes=mags, output_dir=out, duration=duration, save_model=save_model,
        allow_model_paths=True,
    )
    return [str(out / manifest["normal"]["file"])] + [str(out / f["file"]) for f in manifest["flossed"]]
