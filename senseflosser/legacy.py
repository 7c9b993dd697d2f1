"""The original tool's entry points, kept for people who used them.

- ``from senseflosser.utils import run_senseflosser`` (also ``senseflosser.run_senseflosser``);
- the console scripts ``run_senseflosser`` and ``build_autoencoder``, which take the
  original scripts' flags and map them onto ``senseflosser floss`` and
  ``senseflosser train``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import SenseflosserError
from .recipe import DEFAULT_TITRATION

log = logging.getLogger("senseflosser")

_LEVELS = {"critical": logging.CRITICAL, "error": logging.ERROR, "warn": logging.WARNING,
           "warning": logging.WARNING, "info": logging.INFO, "debug": logging.DEBUG}


def run_senseflosser(
    model_file: str | os.PathLike | None,
    magnitude: float | Sequence[float],
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
    model_file : str or os.PathLike or None
        A registry model name or a ``.keras`` / ``.h5`` file; ``None``: the best shipped model.
    magnitude : float or sequence of float
        Damage strength, or several (the original took a list); ignored when ``titrate``.
    action : str
        A registered action (``fog``, ``lapse``, ...).
    input_file : str or os.PathLike
        Audio file.
    output_dir : str or os.PathLike
        Where the outputs go (created if needed).
    duration : float or None
        Seconds of audio to process from the start; ``None`` = all.
    titrate : bool
        Use the original's magnitudes 0.01, 0.05, 0.1, 0.2, 0.5 instead.
    save_model : bool
        Also save each flossed model as ``.keras`` in ``output_dir``.

    Returns
    -------
    list of str
        Paths of the WAV files written: the normal output first, then one per
        magnitude. Unlike the original, a random seed is drawn and recorded
        in the recipe JSON written beside each output.
    """
    from .jobspec import Outputs, build_job
    from .models import ModelRegistry
    from .render import floss_file

    if titrate:
        mags = list(DEFAULT_TITRATION)
    elif isinstance(magnitude, (str, bytes)) or not isinstance(magnitude, Sequence):
        mags = [magnitude]
    else:
        mags = list(magnitude)
    out = Path(output_dir)
    registry = ModelRegistry()
    spec = build_job(model=registry.best() if model_file is None else str(model_file), action=action, magnitudes=mags, duration=duration,
                     outputs=Outputs(save_model=save_model))
    manifest = floss_file(spec, input_file, registry=registry, output_dir=out, allow_model_paths=True)
    return [str(out / manifest["normal"]["file"])] + [str(out / f["file"]) for f in manifest["flossed"]]


def _logging(level: str) -> None:
    name = level.lower() if level.lower() in _LEVELS else "warn"
    logging.basicConfig(stream=sys.stderr, level=_LEVELS[name], format="%(asctime)s - %(levelname)s: %(message)s",
                        datefmt="%Y-%m-%d %H:%M:%S")


def _fail(prog: str, exc: BaseException) -> int:
    print(f"{prog}: error: {exc}", file=sys.stderr)
    return 1


def run_main(argv: Sequence[str] | None = None) -> int:
    """``run_senseflosser``: the original ``run_senseflosser.py`` command line."""
    from .actions import names

    p = argparse.ArgumentParser(prog="run_senseflosser",
                                description="The original tool's command line (senseflosser floss does more).")
    p.add_argument("--model", default=None, help="model file or registry name (default: the best shipped model, "
                                                   "first in `senseflosser models`)")
    p.add_argument("--magnitude", type=float, default=None, help="magnitude of the damage (default 0.01)")
    p.add_argument("--titrate", action="store_true", help="titrate: 0.01, 0.05, 0.1, 0.2, 0.5")
    p.add_argument("--duration", type=float, help="duration of audio in seconds")
    p.add_argument("--action", default="fog", help=f"action to perform ({', '.join(names())}; default fog)")
    p.add_argument("--input", required=True, help="input file to process")
    p.add_argument("--output-dir", default="./output", help="output directory (default: ./output)")
    p.add_argument("--save-model", action="store_true", help="save flossed model")
    p.add_argument("--log", default="warn", help="logging level (critical, error, warn, info, debug)")
    args = p.parse_args(argv)
    _logging(args.log)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.titrate and args.magnitude is not None:
        log.warning("Titrate takes precedence over magnitude; ignoring magnitude if specified...")
    if args.action not in names():
        log.error("Action must be one of: %s", ", ".join(names()))
        return 1
    try:
        paths = run_senseflosser(args.model, 0.01 if args.magnitude is None else args.magnitude, args.action,
                                 args.input, args.output_dir, args.duration, args.titrate, args.save_model)
    except SenseflosserError as exc:
        return _fail(p.prog, exc)
    for path in paths:
        print(path)
    return 0


def build_main(argv: Sequence[str] | None = None) -> int:
    """``build_autoencoder``: the original ``build_autoencoder.py`` command line, training with ``senseflosser train``.

    The model is written as ``models/<duration>s_audio_autoencoder.keras`` (the
    original wrote ``.h5``, which Keras 3 no longer loads reliably) with a card.
    """
    p = argparse.ArgumentParser(prog="build_autoencoder",
                                description="The original tool's training command line (senseflosser train does more).")
    p.add_argument("--data-dir", required=True, help="directory containing the audio files")
    p.add_argument("--duration", type=int, default=30, help="duration of audio (in seconds) to use for training")
    p.add_argument("--var-input", action="store_true", help="use variable input size for model")
    p.add_argument("--percentage", type=float, help="share of the dataset to use (0-1, or 0-100; default 0.6)")
    p.add_argument("--log", default="warn", help="logging level (critical, error, warn, info, debug)")
    p.add_argument("--epochs", type=int, default=20, help="(not in the original) epochs of training")
    p.add_argument("--steps-per-epoch", type=int, default=40, help="(not in the original) steps per epoch")
    args = p.parse_args(argv)
    _logging(args.log)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.duration < 1:
        return _fail(p.prog, ValueError(f"--duration must be at least 1 second, got {args.duration}"))
    share = 0.6 if args.percentage is None else args.percentage
    percentage = share * 100 if share <= 1 else share
    from .models import default_models_dir
    from .training import TrainConfig, train

    name = f"{args.duration}s_audio_autoencoder"
    cfg = TrainConfig(name=name, duration=float(args.duration), var_input=args.var_input, percentage=percentage,
                      epochs=args.epochs, steps_per_epoch=args.steps_per_epoch)
    try:
        result = train(args.data_dir, cfg, models_dir=default_models_dir(),
                       verbose="auto" if sys.stderr.isatty() else 2)
    except SenseflosserError as exc:
        return _fail(p.prog, exc)
    print(f"wrote {result.model_path}")
    return 0
