"""Command-line options for third-party weights, shared by ``eval``, ``analyze`` and ``report``.

One job: ``--model/--weights/--dataset/--remap/--input-norm`` (and ``--checkpoint-key``,
``--model-kw``, ``--import-dir``) on ``analyze`` and ``report``, which import the weights into a
run directory (:func:`robustlab.train.importing.import_weights`) and then treat it as a run;
and the one-line printing of the normalization warning (``load_checkpoint``'s
``NormalizationWarning``) that ``eval`` shares.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from robustlab.errors import RobustlabError

__all__ = [
    "add_input_norm_option",
    "add_import_options",
    "import_from_args",
    "load_with_warning",
    "print_normalization",
]

T = TypeVar("T")


def add_input_norm_option(p: argparse._ActionsContainer) -> None:
    """``--input-norm``: the normalization the model applies to its [0, 1] inputs."""
    from robustlab.models.registry import INPUT_NORM_HELP

    p.add_argument(
        "--input-norm",
        default=None,
        metavar="NORM",
        help=f"input normalization inside the model: {INPUT_NORM_HELP}; default auto",
    )


def add_import_options(p: argparse.ArgumentParser) -> None:
    """The third-party model options of ``analyze`` and ``report`` (as ``eval`` has them)."""
    g = p.add_argument_group(
        "third-party weights",
        "explain weights that are not a robustlab run: they are imported into --import-dir "
        "(a run directory recording where they came from) and used as one more RUN_DIR",
    )
    g.add_argument("--model", default=None, help="architecture name (see robustlab.models)")
    g.add_argument("--weights", default=None, help="weights file (.pt state dict or .safetensors)")
    g.add_argument("--dataset", default=None, help="dataset name, e.g. mnist, cifar10")
    g.add_argument("--remap", choices=["none", "auto"], default="none",
                   help="auto: load by tensor order when key names differ")  # fmt: skip
    add_input_norm_option(g)
    g.add_argument("--checkpoint-key", default=None, help="entry of the file holding the weights")
    g.add_argument("--model-kw", action="append", default=[], metavar="KEY=VALUE",
                   help="extra architecture option, e.g. depth=34 (repeatable)")  # fmt: skip
    g.add_argument("--import-dir", default=None, metavar="DIR",
                   help="run directory to import into")  # fmt: skip


def model_kw(items: list[str]) -> dict[str, Any]:
    """Parse repeated ``--model-kw KEY=VALUE`` options (values read as YAML scalars: 34, 0.3,
    true); ``eval`` and the third-party import share it."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RobustlabError(f"--model-kw expects KEY=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return out


def import_from_args(args: argparse.Namespace) -> Path | None:
    """Import ``--weights`` into a run directory when ``--model/--weights`` are given; returns
    the run directory (None without them). Missing companions are a one-line error."""
    given = [o for o in ("model", "weights", "dataset") if getattr(args, o, None)]
    extra = args.input_norm is not None or args.remap != "none" or args.model_kw
    if not given:
        if extra or args.import_dir or args.checkpoint_key:
            raise RobustlabError(
                "--input-norm, --remap, --model-kw need --model/--weights/--dataset"
            )
        return None
    missing = [f"--{o}" for o in ("model", "weights", "dataset") if o not in given]
    if missing:
        raise RobustlabError(f"third-party weights need {', '.join(missing)} as well")
    from robustlab.models.registry import model_spec
    from robustlab.train.importing import import_weights

    model_spec(args.model)  # unknown names: the list of known ones, before any work
    target = args.import_dir or f"runs/import-{args.model}-{Path(args.weights).stem}"
    run, origin = import_weights(
        target,
        args.model,
        args.weights,
        args.dataset,
        remap=args.remap,
        input_norm=args.input_norm or "auto",
        key=args.checkpoint_key,
        model_kwargs=model_kw(args.model_kw),
    )
    print(f"imported {args.weights} into {run} ({print_normalization(origin)})", file=sys.stderr)
    if origin.get("warning"):
        print(f"robustlab: warning: {origin['warning']}", file=sys.stderr)
    return run


def print_normalization(origin_or_info: dict[str, Any]) -> str:
    """``input normalization: ...`` from a normalization record (or an origin holding one)."""
    info = origin_or_info.get("input_normalization", origin_or_info)
    if not info.get("applied"):
        return "input normalization: none (raw [0, 1] inputs)"
    return f"input normalization: (x - {info['mean']}) / {info['std']}"


def load_with_warning(load: Callable[[], T], quiet: bool = False) -> tuple[T, list[str]]:
    """Run ``load()`` (a ``load_checkpoint`` call); its normalization warnings are returned and
    printed as one ``robustlab: warning:`` line each on stderr (unless ``quiet``)."""
    from robustlab.models.checkpoint import NormalizationWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = load()
    msgs = []
    for w in caught:
        if issubclass(w.category, NormalizationWarning):
            msgs.append(str(w.message))
            if not quiet:
                print(f"robustlab: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result, msgs
