"""Command line: ``senseflosser floss | train | evaluate | models``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .errors import SenseflosserError

log = logging.getLogger("senseflosser")

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ProgressBar:
    """A one-line progress display on stderr (plain log lines when not a terminal)."""

    def __init__(self, label: str, stream=None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = time.monotonic()
        self.last_pct = -1

    def __call__(self, fraction: float, message: str) -> None:
        pct = int(fraction * 100)
        if self.tty:
            bar = "#" * (pct // 4) + "-" * (25 - pct // 4)
            self.stream.write(f"\r{self.label} [{bar}] {pct:3d}% {message[:40]:<40}")
            if fraction >= 1.0:
                self.stream.write(f"\r{self.label} done in {time.monotonic() - self.t0:.1f} s{' ' * 60}\n")
            self.stream.flush()
        elif pct // 10 != self.last_pct // 10 or fraction >= 1.0:
            self.stream.write(f"{self.label}: {pct}% {message}\n")
            self.stream.flush()
        self.last_pct = pct


def _magnitude(text: str) -> float:
    from .recipe import validate_magnitude

    try:
        return validate_magnitude(text)
    except SenseflosserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    return v


class _Parser(argparse.ArgumentParser):
    """Usage mistakes end in one line on stderr, like every other error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="senseflosser",
        description="Damage a pretrained audio autoencoder and listen to what it makes of your audio.",
    )
    parser.add_argument("--log", default="WARNING", type=str.upper, choices=_LEVELS, help="log level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("floss", help="run audio through a damaged model")
    p.add_argument("--input", "-i", required=True, help="audio file (WAV, FLAC, OGG, MP3, ...)")
    p.add_argument("--model", "-m", help="registry model name or a .keras/.h5 file (see `senseflosser models`)")
    p.add_argument("--action", "-a", choices=("fog", "lapse"), help="fog: noisy weights; lapse: dropout at inference")
    p.add_argument("--magnitude", "-g", type=_magnitude, default=0.1, help="strength in [0, 1] (default 0.1)")
    p.add_argument("--titrate", "-t", action="store_true", help="run magnitudes 0.01 0.05 0.1 0.2 0.5 instead")
    p.add_argument("--magnitudes", help="comma-separated magnitudes instead of --magnitude")
    p.add_argument("--seed", "-s", help="seed of the damage (default: drawn and recorded)")
    p.add_argument("--layers", "-l", help="comma-separated conv layer names to damage (default: all)")
    p.add_argument("--offset", type=_seconds, default=0.0, help="start of the segment in seconds")
    p.add_argument("--duration", "-d", type=_seconds, default=None, help="length of the segment in seconds")
    p.add_argument("--output-dir", "-o", default="output", help="where outputs go (default ./output)")
    p.add_argument("--save-model", action="store_true", help="also save each flossed model (.keras)")
    p.add_argument("--spectrograms", action="store_true", help="also write PNG spectrograms")
    p.add_argument("--recipe", help="reproduce a recipe JSON written by an earlier run")
    p.add_argument("--models-dir", help="model registry folder (default ./models)")
    p.add_argument("--log", dest="log_sub", type=str.upper, choices=_LEVELS, help=argparse.SUPPRESS)

    p = sub.add_parser("models", help="list the model registry")
    p.add_argument("--models-dir", help="model registry folder (default ./models)")
    p.add_argument("--json", action="store_true", help="print the cards as JSON")
    p.add_argument("--log", dest="log_sub", type=str.upper, choices=_LEVELS, help=argparse.SUPPRESS)

    p = sub.add_parser("train", help="train an autoencoder on a folder of audio")
    p.add_argument("--data-dir", required=True, help="folder searched recursively for audio")
    p.add_argument("--name", required=True, help="model name (writes <models-dir>/<name>.keras)")
    p.add_argument("--arch", default="bottleneck", choices=("bottleneck", "deep", "original", "bands"))
    p.add_argument("--duration", type=float, default=5.0, help="seconds per training example")
    p.add_argument("--var-input", action="store_true", help="model accepts any number of frames")
    p.add_argument("--percentage", type=float, default=100.0, help="share of the files used (0-100]")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--steps-per-epoch", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--width", type=int, default=32, help="channels of the full-resolution layers (bands: per band)")
    p.add_argument("--band", type=int, default=8, help="bins per band (--arch bands)")
    p.add_argument("--depth", type=int, default=2, help="conv layers between band encoder and decoder (--arch bands)")
    p.add_argument("--front", type=int, default=0,
                   help="channels of full-resolution first and last layers, 0 for none (--arch bands)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-split", type=float, default=0.15)
    p.add_argument("--patience", type=int, default=4, help="epochs without improvement before stopping")
    p.add_argument("--max-minutes", type=float, help="stop after this much wall time")
    p.add_argument("--corpus", help="corpus description for the model card")
    p.add_argument("--licence", help="corpus licence for the model card")
    p.add_argument("--summary", help="one-line summary for the model card")
    p.add_argument("--models-dir", default=None, help="where the model goes (default ./models)")
    p.add_argument("--work-dir", help="checkpoints, cache and loss log (default .senseflosser-work/<name>)")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming an earlier run")
    p.add_argument("--log", dest="log_sub", type=str.upper, choices=_LEVELS, help=argparse.SUPPRESS)

    p = sub.add_parser("evaluate", help="measure a model on held-out audio and update its card")
    p.add_argument("--model", "-m", required=True, help="registry model name")
    p.add_argument("--data-dir", required=True, help="folder of audio not used in training")
    p.add_argument("--clip-seconds", type=float, default=10.0, help="length of each evaluation excerpt")
    p.add_argument("--clips", type=int, default=8, help="at most this many excerpts")
    p.add_argument("--models-dir", help="model registry folder (default ./models)")
    p.add_argument("--no-write", action="store_true", help="print the figures without updating the card")
    p.add_argument("--log", dest="log_sub", type=str.upper, choices=_LEVELS, help=argparse.SUPPRESS)
    return parser


def _registry(args):
    from .models import ModelRegistry

    return ModelRegistry(args.models_dir)


def _cmd_floss(args) -> int:
    from .recipe import DEFAULT_TITRATION, parse_magnitudes, recipes_from_json
    from .render import floss_to_dir

    opts = dict(
        model=args.model, action=args.action, seed=args.seed, layers=args.layers,
        offset=args.offset, duration=args.duration,
    )
    if args.recipe:
        try:
            recipes = recipes_from_json(Path(args.recipe).read_text())
        except OSError as exc:
            raise SenseflosserError(f"cannot read recipe {args.recipe!r}: {exc.strerror}") from None
        recipe = recipes[0]
        opts.update(model=args.model or recipe.model, action=recipe.action, seed=recipe.seed,
                    layers=list(recipe.layers) if recipe.layers else None,
                    offset=recipe.offset, duration=recipe.duration)
        mags = [r.magnitude for r in recipes]
    elif args.titrate:
        mags = list(DEFAULT_TITRATION)
    elif args.magnitudes:
        mags = list(parse_magnitudes(args.magnitudes))
    else:
        mags = [args.magnitude]
    if not opts["model"]:
        raise SenseflosserError("--model is required (a name from `senseflosser models` or a .keras file)")
    if not opts["action"]:
        raise SenseflosserError("--action is required (fog or lapse)")
    manifest = floss_to_dir(
        args.input, registry=_registry(args), magnitudes=mags, output_dir=args.output_dir,
        save_model=args.save_model, spectrograms=args.spectrograms, allow_model_paths=True,
        progress=ProgressBar("flossing"), **opts,
    )
    out = Path(args.output_dir)
    print(f"seed {manifest['seed']}; normal output: {out / manifest['normal']['file']}")
    for f in manifest["flossed"]:
        m = f["metrics"]
        extra = f"  gain {m['gain']:.3f}" if m["gain"] != 1.0 else ""
        print(f"{out / f['file']}  SNR vs normal {m['snr_db']:.1f} dB  LSD {m['lsd_db']:.1f} dB{extra}")
        if f.get("model"):
            print(f"  model: {out / f['model']}")
    return 0


def _cmd_models(args) -> int:
    reg = _registry(args)
    cards = reg.cards()
    if args.json:
        print(json.dumps(cards, indent=2))
        return 0
    if not cards:
        print(f"no models in {reg.models_dir}")
        return 0
    for card in cards:
        ev = card.get("evaluation") or {}
        figures = ""
        if ev.get("normal"):
            figures = f"  [SI-SNR {ev['normal']['si_snr_db_median']:.1f} dB, LSD {ev['normal']['lsd_db_median']:.2f} dB]"
        print(f"{card['name']}: {card.get('summary', '')}{figures}")
    return 0


def _cmd_train(args) -> int:
    from .training import TrainConfig, train

    cfg = TrainConfig(
        name=args.name, arch=args.arch, duration=args.duration, var_input=args.var_input,
        percentage=args.percentage, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size, seed=args.seed, val_split=args.val_split,
        learning_rate=args.learning_rate, width=args.width, band=args.band, depth=args.depth, front=args.front,
        patience=args.patience,
        max_minutes=args.max_minutes, corpus=args.corpus, licence=args.licence, summary=args.summary,
    )
    from .models import default_models_dir

    result = train(args.data_dir, cfg, models_dir=args.models_dir or default_models_dir(),
                   work_dir=args.work_dir, fresh=args.fresh, verbose="auto" if sys.stderr.isatty() else 2)
    t = result.card["training"]
    print(f"wrote {result.model_path} ({result.card['parameters']} parameters); "
          f"{t['epochs_run']} epochs, final loss {t['final_loss']}, stopped by {t['stopped_by']}")
    return 0


def _cmd_evaluate(args) -> int:
    from .evaluation import evaluate, update_card

    reg = _registry(args)
    report = evaluate(reg, args.model, args.data_dir, clip_seconds=args.clip_seconds,
                      max_clips=args.clips, progress=ProgressBar("evaluating"))
    n = report["normal"]
    print(f"{args.model}: normal SI-SNR median {n['si_snr_db_median']:.1f} dB (worst {n['si_snr_db_worst']:.1f}), "
          f"LSD median {n['lsd_db_median']:.2f} dB (worst {n['lsd_db_worst']:.2f}) over {n['clips']} clips")
    for action, curve in report["dose_response"].items():
        pts = ", ".join(f"{m:g}: {v:.1f}" for m, v in zip(report["magnitudes"], curve["snr_db_median"]))
        print(f"  {action} SNR vs normal (dB) at {pts}")
    if not args.no_write:
        card_path, plot = update_card(reg, args.model, report)
        print(f"updated {card_path} and {plot}")
    return 0


COMMANDS = {"floss": _cmd_floss, "models": _cmd_models, "train": _cmd_train, "evaluate": _cmd_evaluate}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    level = getattr(args, "log_sub", None) or args.log
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return COMMANDS[args.command](args)
    except SenseflosserError as exc:
        print(f"senseflosser: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("senseflosser: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("senseflosser: error: out of memory (try a shorter --duration)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
