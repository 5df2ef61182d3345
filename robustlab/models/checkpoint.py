"""Loading checkpoints into models: unwrapping, prefix stripping, clear mismatch errors, remapping.

``load_checkpoint(model, path)`` accepts a bare state dict, a dict holding it under
``state_dict``/``model``/``model_state_dict``/``net`` (robustlab's own training checkpoints keep
it under ``model``), with ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile)
prefixes. With ``remap="auto"`` a checkpoint whose key names differ but whose tensors line up
with the model's state dict in order and shape is loaded by position. Files ending in
``.safetensors`` are read with safetensors (tensors only, no code) and go through the same
prefix stripping, remapping and error messages; ``save_weights`` writes them.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from robustlab.errors import CheckpointError, ConfigError
from robustlab.io import atomic_write_bytes, safe_torch_load

__all__ = [
    "LoadReport",
    "load_checkpoint",
    "extract_state_dict",
    "read_weights",
    "save_weights",
    "REMAP_MODES",
    "SAFETENSORS_SUFFIX",
    "RUN_WEIGHTS_KEY",
    "safetensors_metadata",
    "NormalizationWarning",
    "is_robustlab_checkpoint",
    "normalization_warning",
]

SAFETENSORS_SUFFIX = ".safetensors"
_ORDER_KEY = "robustlab.key_order"  # header metadata: the state dict's key order (JSON list)
#: Header metadata key set (to "1") on the weights a robustlab training run exports: the model
#: they belong to was built from the run's configuration, input normalization included.
RUN_WEIGHTS_KEY = "robustlab.run_weights"

REMAP_MODES = ("none", "auto")
STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "net")
PREFIXES = ("module.", "_orig_mod.")
_SHOW = 5  # how many keys of each kind an error message lists


@dataclass
class LoadReport:
    """What ``load_checkpoint`` did.

    ``entry``: the key path of the state dict inside the file ("" for a bare state dict);
    ``stripped``: prefixes removed; ``remapped``: checkpoint key -> model key for keys loaded
    by position under ``remap="auto"``; ``missing``/``unexpected``/``mismatched`` are only
    non-empty with ``strict=False`` (strict loading raises instead).
    """

    path: str
    entry: str = ""
    stripped: list[str] = field(default_factory=list)
    num_tensors: int = 0
    num_values: int = 0
    remapped: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    robustlab_run: bool = False
    warning: str | None = None

    def summary(self) -> str:
        """One line describing the load."""
        where = f" (entry {self.entry!r})" if self.entry else ""
        parts = [f"loaded {self.num_tensors} tensors ({self.num_values:,} values){where}"]
        if self.stripped:
            parts.append(f"stripped prefix {' '.join(self.stripped)}")
        if self.remapped:
            parts.append(f"remapped {len(self.remapped)} keys by position")
        if self.missing or self.unexpected or self.mismatched:
            parts.append(
                f"skipped {len(self.missing)} missing, {len(self.unexpected)} unexpected, "
                f"{len(self.mismatched)} mismatched"
            )
        return "; ".join(parts)


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and all(isinstance(v, Tensor) for v in obj.values())
    )


def extract_state_dict(obj: Any, key: str | None = None) -> tuple[dict[str, Tensor], str]:
    """Find the model state dict in a loaded checkpoint; returns (state dict, entry path).

    ``key`` selects an entry explicitly (e.g. ``"ema"``); otherwise a bare state dict is used
    as is, or the first of ``state_dict``, ``model``, ``model_state_dict``, ``net`` holding one
    (searched two levels deep).
    """
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            have = ", ".join(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
            raise CheckpointError(f"checkpoint has no entry {key!r} (it has: {have})")
        found, sub = extract_state_dict(obj[key])
        return found, key + ("/" + sub if sub else "")
    if _is_state_dict(obj):
        return dict(obj), ""
    if isinstance(obj, Mapping):
        for k in STATE_DICT_KEYS:
            if k in obj:
                v = obj[k]
                if _is_state_dict(v):
                    return dict(v), k
                if isinstance(v, Mapping):
                    for k2 in STATE_DICT_KEYS:
                        if k2 in v and _is_state_dict(v[k2]):
                            return dict(v[k2]), f"{k}/{k2}"
        have = ", ".join(map(str, list(obj)[:10]))
        raise CheckpointError(
            "checkpoint holds no model state dict: expected a dict of tensors or an entry named "
            f"{', '.join(STATE_DICT_KEYS)} (it has: {have})"
        )
    raise CheckpointError(
        f"checkpoint holds a {type(obj).__name__}, not a model state dict (a dict of tensors)"
    )


def _strip_prefixes(
    sd: dict[str, Tensor], model_keys: set[str]
) -> tuple[dict[str, Tensor], list[str]]:
    """Remove ``module.``/``_orig_mod.`` prefixes shared by every key (repeatedly)."""
    stripped: list[str] = []
    changed = True
    while changed and sd:
        changed = False
        for p in PREFIXES:
            if all(k.startswith(p) for k in sd) and not (set(sd) & model_keys):
                sd = {k[len(p) :]: v for k, v in sd.items()}
                stripped.append(p)
                changed = True
    return sd, stripped


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape)


def _listing(title: str, items: list[str]) -> str:
    more = f", ... (+{len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return f"{len(items)} {title}: {', '.join(items[:_SHOW])}{more}"


def _order_mapping(sd: dict[str, Tensor], target: dict[str, Tensor]) -> dict[str, str] | None:
    """Checkpoint key -> model key by position, or None when count or shapes do not line up.

    BatchNorm ``num_batches_tracked`` counters are ignored on both sides (old files lack them).
    """
    src = [k for k in sd if not k.endswith("num_batches_tracked")]
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        return None
    if any(_shape(sd[a]) != _shape(target[b]) for a, b in zip(src, dst, strict=True)):
        return None
    mapping = dict(zip(src, dst, strict=True))
    # carry the counters along when both sides have them in the same positions
    src_c = [k for k in sd if k.endswith("num_batches_tracked")]
    dst_c = [k for k in target if k.endswith("num_batches_tracked")]
    if len(src_c) == len(dst_c):
        mapping.update(zip(src_c, dst_c, strict=True))
    return mapping


def _first_order_break(sd: dict[str, Tensor], target: dict[str, Tensor]) -> str:
    """Describe where the checkpoint's tensors stop lining up with the model's."""
    src = [k for k in sd if not k.endswith("num_batches_tracked")]
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    for i, (a, b) in enumerate(zip(src, dst, strict=False)):
        if _shape(sd[a]) != _shape(target[b]):
            return (
                f"tensor #{i} differs: checkpoint {a} {list(_shape(sd[a]))} vs model "
                f"{b} {list(_shape(target[b]))}"
            )
    return f"checkpoint has {len(src)} tensors, the model {len(dst)}"


def _mismatch_message(
    model: nn.Module,
    sd: dict[str, Tensor],
    target: dict[str, Tensor],
    missing: list[str],
    unexpected: list[str],
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
    path: str,
    remap: str,
) -> str:
    """The one-line explanation of why ``sd`` does not load into ``model``."""
    arch = getattr(model, "arch", type(model).__name__)
    parts = []
    if missing:
        parts.append(_listing("missing keys (in the model, not the checkpoint)", missing))
    if unexpected:
        parts.append(_listing("unexpected keys (in the checkpoint only)", unexpected))
    if mismatched:
        shown = [f"{k} {list(a)} vs model {list(b)}" for k, a, b in mismatched]
        parts.append(_listing("shape mismatches (checkpoint vs model)", shown))
    n_ckpt = sum(t.numel() for t in sd.values())
    n_model = sum(t.numel() for t in target.values())
    stats = ("running_mean", "running_var", "num_batches_tracked")
    if unexpected and not missing and all(k.startswith("sub_block1.") for k in unexpected):
        hint = (
            "the checkpoint has the unused sub_block1 of the TRADES WideResNet: create the model "
            "with sub_block1=True (command line: --model-kw sub_block1=true)"
        )
    elif missing and not unexpected and all(k.endswith(stats) for k in missing):
        hint = (
            "the model has BatchNorm running statistics that the checkpoint lacks: it was "
            "probably trained with GroupNorm (norm='gn', command line: --norm gn)"
        )
    elif unexpected and all(k.endswith(stats) for k in unexpected):
        hint = (
            "the checkpoint has BatchNorm running statistics that the model lacks: it was "
            "probably trained with BatchNorm (norm='bn', command line: --norm bn)"
        )
    elif _order_mapping(sd, target) is not None:
        hint = (
            "the tensors match the model in order and shape but the names differ: "
            "try remap='auto' (command line: --remap auto)"
        )
    else:
        hint = (
            "looks like a checkpoint for another architecture or configuration "
            f"(checkpoint: {len(sd)} tensors, {n_ckpt:,} values; model: {len(target)} tensors, "
            f"{n_model:,} values; {_first_order_break(sd, target)})"
        )
    if remap == "auto":
        hint = "remap='auto' refused: the tensors do not line up in order and shape; " + hint
    return f"checkpoint {path} does not fit model {arch}: " + "; ".join(parts) + f". Hint: {hint}"


def save_weights(
    weights: nn.Module | Mapping[str, Tensor],
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a model's (or a state dict's) tensors to a ``.safetensors`` file, atomically.

    Tensors are copied to contiguous CPU memory (safetensors stores no shared or strided
    views); ``metadata`` is a small ``str -> str`` mapping stored in the file's header, along
    with the state dict's key order (safetensors itself stores tensors sorted, and loading with
    ``remap="auto"`` matches tensors by position). Returns the path written.
    """
    from safetensors.torch import save

    p = Path(path)
    if p.suffix != SAFETENSORS_SUFFIX:
        raise ConfigError(f"{p}: a safetensors weights file must end in {SAFETENSORS_SUFFIX}")
    sd = weights.state_dict() if isinstance(weights, nn.Module) else weights
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta[_ORDER_KEY] = json.dumps(list(tensors))
    atomic_write_bytes(p, save(tensors, metadata=meta))
    return p


def read_weights(path: str | os.PathLike[str]) -> Any:
    """The object stored in a weights file: a state dict for ``.safetensors``, else whatever
    ``torch.load(..., weights_only=True)`` returns. Unreadable files raise a one-line
    :class:`CheckpointError`."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint file not found: {p}")
    if p.suffix == SAFETENSORS_SUFFIX:
        return _read_safetensors(p)
    return safe_torch_load(
        p, map_location="cpu", advice="check the path, or download or export the weights again"
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``str -> str`` metadata in a safetensors file's header ({} when unreadable)."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            meta = json.loads(f.read(n)).get("__metadata__") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _read_safetensors(p: Path) -> dict[str, Tensor]:
    from safetensors.torch import load

    raw = p.read_bytes()
    try:
        sd = load(raw)
        n = int.from_bytes(raw[:8], "little")
        meta = json.loads(raw[8 : 8 + n]).get("__metadata__") or {}
    except Exception as e:  # safetensors raises its own SafetensorError (or a ValueError)
        raise CheckpointError(
            f"{p}: not a readable safetensors file (corrupt or truncated: {_first_line(e)})"
        ) from None
    if not sd:
        raise CheckpointError(f"{p}: the safetensors file holds no tensors")
    try:
        order = json.loads(meta.get(_ORDER_KEY, "[]"))
    except ValueError:
        order = []
    if isinstance(order, list) and sorted(order) == sorted(sd):
        sd = {k: sd[k] for k in order}  # the order the tensors had when saved
    return sd


def load_checkpoint(
    model: nn.Module,
    path: str | os.PathLike[str],
    remap: str = "none",
    strict: bool = True,
    key: str | None = None,
) -> LoadReport:
    """Load the weights in ``path`` into ``model`` (in place) and report what was done.

    ``path`` is a torch file (read with ``weights_only=True``) or a ``.safetensors`` file.

    ``remap="auto"``: when names differ, load by position if every tensor lines up in order
    and shape with the model's state dict (the mapping is in ``report.remapped``). With
    ``strict=False`` the matching tensors are loaded and the rest listed in the report.
    Raises :class:`CheckpointError` with the missing/unexpected/mis-shaped keys otherwise.
    """
    if remap not in REMAP_MODES:
        raise ConfigError(f"unknown remap mode {remap!r}; choose one of {', '.join(REMAP_MODES)}")
    p = Path(path)
    obj = read_weights(p)
    if key is not None and p.suffix == SAFETENSORS_SUFFIX:
        raise CheckpointError(
            f"{p}: a safetensors file holds one state dict; an entry ({key!r}) applies only to "
            "torch checkpoints"
        )
    sd, entry = extract_state_dict(obj, key)
    target = model.state_dict()
    sd, stripped = _strip_prefixes(sd, set(target))
    report = LoadReport(path=str(p), entry=entry, stripped=stripped)

    missing = [k for k in target if k not in sd]
    unexpected = [k for k in sd if k not in target]
    mismatched = [
        (k, _shape(sd[k]), _shape(target[k]))
        for k in target
        if k in sd and _shape(sd[k]) != _shape(target[k])
    ]
    # Files saved before BatchNorm counted batches lack the counters: not an error.
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]

    if missing or unexpected or mismatched:
        mapping = _order_mapping(sd, target) if remap == "auto" else None
        if mapping is not None:
            sd = {mapping[k]: v for k, v in sd.items() if k in mapping}
            report.remapped = {a: b for a, b in mapping.items() if a != b}
        elif strict:
            raise CheckpointError(
                _mismatch_message(model, sd, target, missing, unexpected, mismatched, str(p), remap)
            )
        else:
            report.missing, report.unexpected, report.mismatched = missing, unexpected, mismatched
            bad = {k for k, _, _ in mismatched}
            sd = {k: v for k, v in sd.items() if k in target and k not in bad}

    to_load = {k: v.to(dtype=target[k].dtype) for k, v in sd.items()}
    model.load_state_dict(to_load, strict=False)
    report.num_tensors = len(to_load)
    report.num_values = sum(t.numel() for t in to_load.values())
    report.robustlab_run = is_robustlab_checkpoint(obj) or (
        p.suffix == SAFETENSORS_SUFFIX and safetensors_metadata(p).get(RUN_WEIGHTS_KEY) == "1"
    )
    if not report.robustlab_run:
        report.warning = normalization_warning(model, str(p))
        if report.warning:
            warnings.warn(report.warning, NormalizationWarning, stacklevel=2)
    return report


class NormalizationWarning(UserWarning):
    """A third-party checkpoint was loaded into a model that normalizes its inputs."""


def is_robustlab_checkpoint(obj: Any) -> bool:
    """Whether a loaded file is a robustlab training checkpoint (``best.pt``/``last.pt``): a
    dict holding ``model`` with robustlab's bookkeeping keys, whose model was built from the
    run's own configuration (input normalization included)."""
    return (
        isinstance(obj, Mapping)
        and "model" in obj
        and ("format" in obj or {"best", "epoch", "step", "ema"} <= set(obj))
    )


def normalization_warning(model: nn.Module, source: str) -> str | None:
    """The warning for a third-party checkpoint loaded into a normalizing model, or None."""
    norm = getattr(model, "normalize", None)
    if norm is None or getattr(norm, "identity", True):
        return None
    mean = [round(float(v), 4) for v in norm.mean.flatten().tolist()]
    std = [round(float(v), 4) for v in norm.std.flatten().tolist()]
    arch = getattr(model, "arch", type(model).__name__)
    return (
        f"{source} is not a robustlab run, and model {arch} normalizes its inputs inside "
        f"((x - {mean}) / {std}); if these weights expect raw [0, 1] inputs, every number will "
        "be wrong: turn it off with --input-norm none (config: model.input_norm: none; "
        "Python: create_model(..., input_norm='none'))"
    )
