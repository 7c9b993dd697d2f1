"""Command line: ``senseflosser floss | video | map | actions | models | train | adversarial | evaluate | clusters |
concepts``."""

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


def _action_help() -> str:
    from .actions import ACTIONS

    return "; ".join(
        f"{a.name}: {a.description} (magnitude = {a.magnitude.meaning}, {a.magnitude.min:g} to {a.magnitude.max:g})"
        for a in ACTIONS.values()
    )


def _seconds(text: str) -> float:
    from .parsing import parse_float

    try:
        return parse_float(text, field="seconds", what="a number of seconds")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None


def _action_list(text: str) -> tuple[str, ...]:
    from .actions import validate_action
    from .errors import RecipeError

    try:
        return tuple(validate_action(a.strip()) for a in text.split(",") if a.strip()) or _no_actions(text)
    except RecipeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _no_actions(text: str):
    raise argparse.ArgumentTypeError(f"expected comma-separated action names, got {text!r}")


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
    p.add_argument("--model", "-m", help="registry model name or a .keras/.h5 file (default: the best model, "
                                         "first in `senseflosser models`)")
    from .actions import all_params, get, names
    from .explanations import EXPLANATIONS

    p.add_argument("--action", "-a", choices=names(), metavar="{" + ",".join(names()) + "}",
                   help=_action_help())
    p.add_argument("--magnitude", "-g", help="strength, in the action's range (default: the action's default)")
    p.add_argument("--titrate", "-t", action="store_true",
                   help="run the action's default titration (five magnitudes across its audible range) instead")
    p.add_argument("--magnitudes", help="comma-separated magnitudes instead of --magnitude")
    p.add_argument("--seed", "-s", help="seed of the damage (default: drawn and recorded)")
    p.add_argument("--layers", "-l",
                   help="conv layers to damage, optionally with channels: 'down:0,5,9,mid' "
                        "(channels 0, 5, 9 of down; all of mid) or a cluster of the model's card: "
                        "'down:cluster2' (see `senseflosser clusters`), or a concept: 'concept:brightness' "
                        "(see `senseflosser concepts`). Default: the action's")
    p.add_argument("--concept-share", help="with --layers concept:NAME: the share (0 to 1] of each layer's channels "
                                           "taken from the concept's ranking (default: the card's checked selection)")
    p.add_argument("--concept-count", help="with --layers concept:NAME: this many channels per layer instead")
    p.add_argument("--explain", metavar="WHICH",
                   help="also write listenable explanations of the --layers channel set: "
                        f"{','.join(EXPLANATIONS)} (any of them; solo: only the set kept, mute: the set "
                        "silenced, difference: normal minus mute)")
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--envelope", help="magnitude over the output's time, seconds:magnitude points, linear "
                                          "between them, held after the last: '0:0,30:0.1,60:0'")
    shape.add_argument("--ramp", metavar="A,B", help="envelope from magnitude A at the start to B at the end")
    shape.add_argument("--lfo", metavar="LOW,HIGH,PERIOD_S", help="envelope: a sine between LOW and HIGH")
    for param in all_params().values():  # every action's declared parameters (see `senseflosser actions`)
        owners = ", ".join(a for a in names() if param in get(a).params)
        if param.type == "bool":
            p.add_argument(*param.flags, dest=f"param_{param.name}", action="store_true", default=None,
                           help=f"{owners}: {param.help}")
        else:
            p.add_argument(*param.flags, dest=f"param_{param.name}", metavar=param.type.upper(),
                           help=f"{owners}: {param.help} (default {param.default})")
    from .ladder import MAX_RUNGS, MIN_RUNGS, RULE

    p.add_argument("--ladder", metavar="K",
                   help=f"render a ladder: K rungs ({MIN_RUNGS} to {MAX_RUNGS}) of one action that nests at one seed, "
                        "spaced evenly on the model card's calibrated scale, instead of --magnitude")
    p.add_argument("--performance", metavar="T:P,...",
                   help="with --ladder: a knob path, seconds:fractional rung position (0..K-1), linear between "
                        f"points, held outside; written as the rungs' crossfade, per sample {RULE}")
    p.add_argument("--performance-envelope", action="store_true",
                   help="with --performance: also render the path as a continuous envelope and report its SNR "
                        "against the crossfade")
    p.add_argument("--offset", type=_seconds, default=0.0, help="start of the segment in seconds")
    p.add_argument("--duration", "-d", type=_seconds, default=None, help="length of the segment in seconds")
    p.add_argument("--output-dir", "-o", default="output", help="where outputs go (default ./output)")
    p.add_argument("--save-model", action="store_true", help="also save each flossed model (.keras)")
    p.add_argument("--spectrograms", action="store_true", help="also write PNG spectrograms")
    p.add_argument("--activations", action="store_true",
                   help="also write each output's activation frames (.frames, see the README)")
    p.add_argument("--activation-layer", help="the conv layer the activation frames come from (implies "
                                              "--activations; default: the most sensitive one of the card's map)")
    p.add_argument("--video", action="store_true", help="also render the visualiser as an MP4 (normal beside the last "
                                                        "flossed output)")
    p.add_argument("--recipe", help="reproduce a recipe JSON written by an earlier run")
    p.add_argument("--models-dir", help="model registry folder (default ./models)")
    p.add_argument("--log", dest="log_sub", type=str.upper, choices=_LEVELS, help=argparse.SUPPRESS)

    p = sub.add_parser("video", help="render the visualiser of normal beside damaged, with the damaged audio, as MP4")
    p.add_argument("--input", "-i", required=True, help="audio file")
    p.add_argument("--model", "-m", help="registry model name or a .keras file (default: the best model)")
    p.add_argument("--action", "-a", choices=names(), metavar="{" + ",".join(names()) + "}", help=_action_help())
    p.add_argument("--magnitude", "-g", help="strength, in the action's range (default: the action's default)")
    p.add_argument("--seed", "-s", help="seed of the damage (default: drawn and recorded)")
    p.add_argument("--layers", "-l", help="conv layers to damage (as for floss)")
    p.add_argument("--activation-layer",
                   help="the conv layer drawn (default: the most sensitive one of the card's map)")
    p.add_argument("--offset", type=_seconds, default=0.0, help="start of the segment in seconds")
    p.add_argument("--duration", "-d", type=_seconds, default=None, help="length of the segment in seconds")
    p.add_argument("--output", "-o", help="the MP4 (default: <input>_<action>_<magnitude>.mp4 here)")
    p.add_argument("--models-dir", help="model registry folder (default ./models)")
    p.add_argument("--log", dest="log_sub", type=str.upper, choices=_LEVELS, help=argparse.SUPPRESS)
    p.set_defaults(spectrograms=False, save_model=False, recipe=None, envelope=None, ramp=None, lfo=None,
                   magnitudes=None, titrate=False, concept_share=None, concept_count=None, activations=True,
                   video=True, ladder=None, performance=None, performance_envelope=False, explain=None)

    p = sub.add_parser("map", help="sensitivity map: each conv layer damaged alone at each magnitude")
    p.add_argument("--input", "-i", required=True, help="audio file")
    p.add_argument("--model", "-m", required=True, help="registry model name or a .keras file")
    p.add_argument("--action", "-a", default="fog", choices=names(), metavar="{" + ",".join(names()) + "}",
                   help="action (default fog)")
    p.add_argument("--magnitudes", help="comma-separated magnitudes (default: the action's titration)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per cell (default 3)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--offset", type=_seconds, default=0.0, help="start of the excerpt in seconds")
    p.add_argument("--duration", "-d", type=_seconds, default=10.0, help="length of the excerpt (default 10 s)")
    p.add_argument("--output-dir", "-o", default="map", help="where map.json, map.csv and map.png go (default ./map)")
    p.add_argument("--channels", action="store_true",
                   help="also rank each layer's channels (neurons) by how much silencing each alone hurts "
                        "(first-order estimate, top ranks checked by real ablation)")
    p.add_argument("--update-card", action="store_true",
                   help="also record the map in the model's card and keep its heat map as models/<name>.map.png")
    p.add_argument("--models-dir", help="model registry folder (default ./models)")
    p.add_argument("--log", dest="log_sub", type=str.upper, choices=_LEVELS, help=argparse.SUPPRESS)

    p = sub.add_parser("actions", help="list the damage actions (the action registry)")
    p.add_argument("--json", action="store_true", help="print them as JSON (as GET /api/actions does)")
    p.add_argument("--markdown", action="store_true", help="print the README's table")
    p.add_argument("--log", dest="log_sub", type=str.upper, choices=_LEVELS, help=argparse.SUPPRESS)

    p = sub.add_parser("models", help="list the model registry")
    p.add_argument("--models-dir", help="model registry folder (default ./models)")
    p.add_argument("--json", action="store_true", help="print the cards as JSON")
    p.add_argument("--markdown", action="store_true", help="print the README's tables of the models")
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

    p = sub.add_parser("adversarial", help="find a model's universal worst-case direction and store it beside it")
    p.add_argument("--model", "-m", required=True, help="registry model name")
    p.add_argument("--data-dir", required=True, help="folder of audio (the model's training or evaluation audio)")
    p.add_argument("--excerpts", type=int, default=12, help="number of excerpts searched on (default 12)")
    p.add_argument("--seconds", type=float, default=5.0, help="length of each excerpt (default 5)")
    p.add_argument("--steps", type=int, default=8, help="gradient ascent steps (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random start (default 0)")
    p.add_argument("--models-dir", help="model registry folder (default ./models)")
    p.add_argument("--log", dest="log_sub", type=str.upper, choices=_LEVELS, help=argparse.SUPPRESS)

    p = sub.add_parser("evaluate", help="measure a model on held-out audio and update its card")
    p.add_argument("--model", "-m", required=True, help="registry model name")
    p.add_argument("--data-dir", required=True, help="folder of audio not used in training")
    p.add_argument("--clip-seconds", type=float, default=10.0, help="length of each evaluation excerpt")
    p.add_argument("--clips", type=int, default=8, help="at most this many excerpts")
    p.add_argument("--models-dir", help="model registry folder (default ./models)")
    p.add_argument("--actions", type=_action_list, metavar="A,B",
                   help="evaluate only these actions and merge their figures into the card's evaluation, which must "
                        "have been measured on the same clips (default: every action, replacing it)")
    p.add_argument("--calibration-points", type=int, default=11,
                   help="points of each action's calibration grid (default 11; fewer: fewer passes, coarser)")
    p.add_argument("--no-write", action="store_true", help="print the figures without updating the card")
    p.add_argument("--log", dest="log_sub", type=str.upper, choices=_LEVELS, help=argparse.SUPPRESS)

    p = sub.add_parser("concepts", help="locate each concept (brightness, noisiness, percussive, bass, air) in a "
                                        "model's channels, check it causally and store it in the card")
    p.add_argument("--model", "-m", required=True, help="registry model name")
    p.add_argument("--data-dir", required=True, help="folder of the model's held-out audio")
    p.add_argument("--share", default="0.125", help="share of each layer's channels a concept takes (default 0.125)")
    p.add_argument("--excerpts", type=int, default=8, help="excerpts the channels are located on (default 8)")
    p.add_argument("--check-excerpts", type=int, default=6,
                   help="other excerpts the causal check runs on (default 6)")
    p.add_argument("--seconds", type=_seconds, default=5.0, help="length of each excerpt (default 5)")
    p.add_argument("--random-sets", type=int, default=50, help="random channel sets of the check (default 50)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shifts and random sets (default 0)")
    p.add_argument("--output-dir", "-o", default="concepts",
                   help="where concepts.json, concepts.csv and concepts.png go (default ./concepts)")
    p.add_argument("--no-write", action="store_true", help="write the files but leave the card as it is")
    p.add_argument("--models-dir", help="model registry folder (default ./models)")
    p.add_argument("--log", dest="log_sub", type=str.upper, choices=_LEVELS, help=argparse.SUPPRESS)

    p = sub.add_parser("clusters", help="group each conv layer's channels by k-means and store them in the card")
    p.add_argument("--model", "-m", required=True, help="registry model name")
    p.add_argument("--data-dir", required=True, help="folder of the model's own audio (held-out or training)")
    p.add_argument("-k", type=int, default=4, help="clusters per layer (default 4; capped at its channels)")
    p.add_argument("--seed", type=int, default=0, help="seed of the k-means++ start (default 0)")
    p.add_argument("--excerpts", type=int, default=8, help="number of excerpts (default 8)")
    p.add_argument("--seconds", type=_seconds, default=5.0, help="length of each excerpt (default 5)")
    p.add_argument("--models-dir", help="model registry folder (default ./models)")
    p.add_argument("--log", dest="log_sub", type=str.upper, choices=_LEVELS, help=argparse.SUPPRESS)

    return parser


def _registry(args):
    from .models import ModelRegistry

    return ModelRegistry(args.models_dir)


def _model_clusters(args, model: str) -> dict[str, list[list[int]]] | None:
    """The clusters of a registry model's card (``None`` for a model given by path, or a card without them)."""
    from .clusters import card_clusters

    reg = _registry(args)
    if model not in reg.names():
        return None
    return card_clusters(reg.read_card(model))


def _model_concepts(args, model: str) -> dict | None:
    """The concepts section of a registry model's card (``None`` for a model given by path, or a card without it)."""
    from .concept_selection import card_concepts

    reg = _registry(args)
    if model not in reg.names():
        return None
    return card_concepts(reg.read_card(model))


def _model_calibration(args, model: str) -> dict | None:
    """The calibration section of a registry model's card (``None`` for a model given by path, or none)."""
    reg = _registry(args)
    if model not in reg.names():
        return None
    return (reg.read_card(model).get("evaluation") or {}).get("calibration")


def floss_spec(args):
    """The job spec of a ``floss`` command line (or of its ``--recipe`` file): every value checked here, once.

    The model is not known yet: :func:`_cmd_floss` fixes it (and checks the
    layers against it) once it is loaded.
    """
    from .actions import params_from_fields
    from .jobspec import Outputs, build_job, job_from_recipe

    outputs = Outputs(spectrograms=args.spectrograms, save_model=args.save_model,
                      activations=args.activations or bool(args.activation_layer),
                      activation_layer=args.activation_layer or None, video=args.video)
    if args.recipe:
        try:
            text = Path(args.recipe).read_text()
        except OSError as exc:
            raise SenseflosserError(f"cannot read recipe {args.recipe!r}: {exc.strerror}") from None
        return job_from_recipe(text, outputs=outputs, model=args.model)
    model = args.model or _registry(args).best()  # the best shipped model when none is named
    if not args.action:
        from .actions import names

        raise SenseflosserError(f"--action is required ({', '.join(names())})")
    envelope = (args.envelope or (f"ramp:{args.ramp}" if args.ramp else None)
                or (f"lfo:{args.lfo}" if args.lfo else None))
    if args.ladder:
        mags = None
    elif args.magnitudes:
        mags = args.magnitudes
    elif args.magnitude is not None:
        mags = [args.magnitude]
    elif args.titrate or envelope is not None:
        mags = None
    else:
        from .actions import get

        mags = get(args.action).magnitude.default
    params = params_from_fields(args.action, lambda name: getattr(args, f"param_{name}", None))
    return build_job(model=model, action=args.action, magnitudes=mags, titrate=args.titrate, seed=args.seed,
                     layers=args.layers, clusters=_model_clusters(args, model),
                     concepts=_model_concepts(args, model) if args.layers and "concept:" in args.layers else None,
                     concept_share=args.concept_share, concept_count=args.concept_count, offset=args.offset, duration=args.duration, envelope=envelope,
                     params=params, outputs=outputs, explain=args.explain, ladder=args.ladder,
                     performance=args.performance, continuous=args.performance_envelope,
                     calibration=_model_calibration(args, model) if args.ladder else None)


def _cmd_floss(args) -> int:
    from .render import floss_file

    spec = args.spec if getattr(args, "spec", None) is not None else floss_spec(args)
    manifest = floss_file(spec, args.input, registry=_registry(args), output_dir=args.output_dir,
                          allow_model_paths=True, progress=ProgressBar("flossing"))
    out = Path(args.output_dir)
    print(f"seed {manifest['seed']}; normal output: {out / manifest['normal']['file']}")
    for f in manifest["flossed"]:
        m = f["metrics"]
        extra = f"  gain {m['gain']:.3f}" if m["gain"] != 1.0 else ""
        print(f"{out / f['file']}  SNR vs normal {m['snr_db']:.1f} dB  LSD {m['lsd_db']:.1f} dB{extra}")
        if f.get("model"):
            print(f"  model: {out / f['model']}")
    for e in manifest.get("explanations") or []:
        print(f"{out / e['file']}  {e['explanation']} of the channel set, RMS {e['metrics']['rms_db']:.1f} dBFS")
    perf = manifest.get("performance")
    if perf:
        print(f"performance: {out / perf['file']}  (recipe {out / perf['recipe_file']})")
        if perf.get("continuous"):
            c = perf["continuous"]
            print(f"continuous envelope: {out / c['file']}  SNR vs the crossfade {c['metrics']['snr_db']:.1f} dB")
    return 0


def _cmd_video(args) -> int:
    import shutil
    import tempfile

    from .render import floss_file, safe_stem

    with tempfile.TemporaryDirectory(prefix="senseflosser-video-") as tmp:
        manifest = floss_file(args.spec, args.input, registry=_registry(args), output_dir=tmp,
                              allow_model_paths=True, progress=ProgressBar("rendering"))
        slug = manifest["flossed"][-1]["recipe_file"].removesuffix(".json") if manifest["flossed"] else "video"
        out = Path(args.output or f"{safe_stem(slug)}.mp4")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(Path(tmp) / manifest["video"], out)
    print(f"seed {manifest['seed']}; video: {out}")
    return 0


def _cmd_map(args) -> int:
    from .sensitivity import map_to_dir

    report = map_to_dir(args.input, registry=_registry(args), model=args.model, output_dir=args.output_dir,
                        action=args.action, magnitudes=args.magnitudes, seeds=args.seeds, seed=args.seed,
                        offset=args.offset, duration=args.duration, allow_model_paths=True,
                        channels=args.channels, progress=ProgressBar("mapping"))
    files = report["files"]
    out = Path(args.output_dir)
    if args.update_card:
        from .sensitivity import record_in_card

        print(f"updated {record_in_card(_registry(args), report, out / files['png'])}")
    print(f"{len(report['layers'])} layers x {len(report['magnitudes'])} magnitudes x {report['seeds']} seeds in "
          f"{report['seconds']:.1f} s ({report['passes_equivalent']} forward passes of the excerpt)")
    print(f"most sensitive first: {', '.join(report['most_sensitive'])}")
    for layer, ranked in (report.get("channels") or {}).items():
        top = ", ".join(str(c) for c in ranked["ranking"][:5])
        print(f"  {layer}: channels {top} matter most"
              f"{'' if ranked['confirmed'] else ' (not confirmed by real ablation)'}")
    print("wrote " + ", ".join(str(out / f) for f in files.values()))
    return 0


def _cmd_actions(args) -> int:
    from .actions import ACTIONS, markdown_table

    if args.json:
        print(json.dumps([spec.to_dict() for spec in ACTIONS.values()], indent=2))
    elif args.markdown:
        print(markdown_table(), end="")
    else:
        for spec in ACTIONS.values():
            m = spec.magnitude
            print(f"{spec.name}: {spec.description}\n  magnitude = {m.meaning}, {m.min:g} to {m.max:g} "
                  f"(default {m.default:g}; titration {', '.join(f'{v:g}' for v in m.titration)}); "
                  f"changes {spec.changes}")
            for param in spec.params:
                print(f"  {param.flags[0]} ({param.type}, default {param.default}): {param.help}")
    return 0


def _cmd_models(args) -> int:
    reg = _registry(args)
    cards = reg.cards()
    if args.json:
        print(json.dumps(cards, indent=2))
        return 0
    if args.markdown:
        from .evaluation import markdown_tables

        print(markdown_tables(cards), end="")
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


def _cmd_adversarial(args) -> int:
    from .actions.worst_case import find_universal

    reg = _registry(args)
    path, info = find_universal(reg, args.model, args.data_dir, excerpts=args.excerpts,
                                          seconds=args.seconds, steps=args.steps, seed=args.seed,
                                          progress=ProgressBar("searching"))
    print(f"wrote {path} (sha256 {info['sha256'][:12]}...; loss rose from {info['loss_start']:.4g} "
          f"to {info['loss_end']:.4g} on {info['excerpts']} excerpts); the card records it")
    return 0


def _cmd_evaluate(args) -> int:
    from .evaluation import evaluate, merge, update_card

    reg = _registry(args)
    from .actions import ACTIONS

    only = None if args.actions is None else {a: ACTIONS[a].magnitude.titration for a in args.actions}
    report = evaluate(reg, args.model, args.data_dir, clip_seconds=args.clip_seconds, max_clips=args.clips,
                      magnitudes=only, calibration_points=args.calibration_points, forward=only is None,
                      progress=ProgressBar("evaluating"))
    n = report["normal"]
    print(f"{args.model}: normal SI-SNR median {n['si_snr_db_median']:.1f} dB (worst {n['si_snr_db_worst']:.1f}), "
          f"LSD median {n['lsd_db_median']:.2f} dB (worst {n['lsd_db_worst']:.2f}) over {n['clips']} clips")
    for action, curve in report["dose_response"].items():
        pts = ", ".join(f"{m:g}: {v:.1f}" for m, v in zip(curve["magnitudes"], curve["snr_db_median"]))
        print(f"  {action} SNR vs normal (dB) at {pts}")
    for row in report.get("adversarial_vs_fog", []):
        print(f"  at {row['magnitude']:g}: adversarial {row['adversarial_snr_db']:.1f} dB, fog {row['fog_snr_db']:.1f} dB "
              f"(worse by {row['worse_by_db']:.1f} dB)")
    if only is not None:
        report = merge(reg.card(args.model).get("evaluation") or {}, report)
    if not args.no_write:
        card_path, plot = update_card(reg, args.model, report)
        print(f"updated {card_path} and {plot}")
    return 0


def _cmd_clusters(args) -> int:
    from .clusters import cluster_model

    section = cluster_model(_registry(args), args.model, args.data_dir, k=args.k, seed=args.seed,
                            excerpts=args.excerpts, seconds=args.seconds, progress=ProgressBar("clustering"))
    print(f"{args.model}: clusters of {len(section['layers'])} conv layers from {len(section['excerpts'])} excerpts "
          f"(k={section['k']}, seed {section['seed']}) written to its card")
    for layer, groups in section["layers"].items():
        print(f"  {layer}: " + "; ".join(f"cluster{i} = {','.join(map(str, g))}" for i, g in enumerate(groups)))
    return 0


def _cmd_concepts(args) -> int:
    from .concepts import locate_model

    reg = _registry(args)
    section = locate_model(reg, args.model, args.data_dir, share=args.share, excerpts=args.excerpts,
                           check_excerpts=args.check_excerpts, seconds=args.seconds, random=args.random_sets,
                           seed=args.seed, output_dir=args.output_dir, update_card=not args.no_write,
                           progress=ProgressBar("locating"))
    cost = section["cost"]
    print(f"{args.model}: {cost['forward_passes']} forward passes ({cost['audio_seconds_through_the_model']:g} s of "
          f"audio through the model) in {cost['seconds']:g} s")
    for concept, entry in section["concepts"].items():
        print(f"  {concept}: {entry['note']}" + (f" [{','.join(entry['selection'])}]" if entry["selection"] else ""))
        if entry.get("band", {}).get("note"):
            band = entry["band"]
            print(f"  {concept}: {band['note']}" + (f" [{band['command']}]" if band.get("command") else ""))
    out = Path(args.output_dir)
    print("wrote " + ", ".join(str(out / f) for f in section["files"].values())
          + ("" if args.no_write else f" and the card's concepts section ({reg.card_path(args.model)})"))
    return 0


COMMANDS = {"floss": _cmd_floss, "video": _cmd_video, "map": _cmd_map, "actions": _cmd_actions, "models": _cmd_models, "train": _cmd_train,
            "adversarial": _cmd_adversarial, "evaluate": _cmd_evaluate, "clusters": _cmd_clusters,
            "concepts": _cmd_concepts}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("floss", "video"):
        from .errors import MagnitudeError

        try:  # the spec is built (every value checked) before anything is loaded
            args.spec = floss_spec(args)
        except MagnitudeError as exc:  # a magnitude out of the action's range is a usage error, as an action is
            parser.error(str(exc))
        except SenseflosserError as exc:
            print(f"senseflosser: error: {exc}", file=sys.stderr)
            return 1
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
