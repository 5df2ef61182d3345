"""``robustlab data``: download datasets from their official sources, check what is present and
valid under the data root, and describe a dataset."""

from __future__ import annotations

import argparse
import json
from typing import Any

from robustlab.data.datasets import SPLITS, check_dataset, locate_dataset
from robustlab.data.info import available_datasets, canonical_name, dataset_info
from robustlab.data.paths import ENV_DATA, resolve_data_root
from robustlab.errors import DataError

_ROOT_HELP = (
    f"data root (default: ${ENV_DATA}, else ~/.cache/robustlab/data, honouring XDG_CACHE_HOME)"
)


def register(subparsers: Any) -> None:
    """Add ``data download|check|info`` to the top-level parser."""
    names = ", ".join(available_datasets())
    p = subparsers.add_parser(
        "data",
        help="download, check and describe datasets",
        description="Datasets in their official formats, verified by the published MD5s.",
    )
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    dl = sub.add_parser(
        "download",
        help="fetch datasets from the official sources",
        description="Fetch datasets from their official URLs into the data root: resumable "
        "(an interrupted download continues from its .part file), MD5-checked and atomic.",
    )
    dl.add_argument("names", nargs="+", metavar="NAME", help=f"dataset(s) or 'all': {names}")
    dl.add_argument("--data-dir", help=_ROOT_HELP + "; created if missing")
    dl.add_argument(
        "--mirror",
        help="base URL serving the official file names (default: $ROBUSTLAB_DATA_MIRROR, "
        "else the official sources)",
    )
    dl.add_argument("--keep-archive", action="store_true", help="keep .tar.gz/.zip after unpacking")
    dl.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    dl.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    dl.set_defaults(func=_download)

    ck = sub.add_parser(
        "check",
        help="report which datasets are present and valid",
        description="Look for each dataset under the data root and verify every file against "
        "its published MD5. Exit status 1 if a dataset named on the command line is missing "
        "or invalid.",
    )
    ck.add_argument("names", nargs="*", metavar="NAME", help="datasets to check (default: all)")
    ck.add_argument("--data-dir", help=_ROOT_HELP)
    ck.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    ck.add_argument("--deep", action="store_true", help="also decode every Tiny-ImageNet JPEG")
    ck.set_defaults(func=_check)

    inf = sub.add_parser(
        "info",
        help="describe a dataset",
        description="Classes, image shape, normalization constants and splits of a dataset, "
        "and where it was found.",
    )
    inf.add_argument("name", metavar="NAME", help=f"one of: {names}")
    inf.add_argument("--data-dir", help=_ROOT_HELP)
    inf.add_argument("--json", action="store_true", help="print JSON")
    inf.set_defaults(func=_info)


def _names(raw: list[str]) -> list[str]:
    if any(n.lower() == "all" for n in raw):
        return available_datasets()
    return list(dict.fromkeys(canonical_name(n) for n in raw))


def _download(args: argparse.Namespace) -> int:
    from robustlab.data.download import download_dataset

    for name in _names(args.names):
        report = download_dataset(
            name,
            args.data_dir,
            mirror=args.mirror,
            keep_archive=args.keep_archive,
            progress=not args.quiet,
            timeout=args.timeout,
        )
        counts = ", ".join(f"{k} {v}" for k, v in dict(report["splits"]).items())  # type: ignore[arg-type]
        print(f"{name}: ok ({counts}) at {report['path']}")
    return 0


def _check(args: argparse.Namespace) -> int:
    root = resolve_data_root(args.data_dir)
    names = _names(args.names) if args.names else available_datasets()
    reports = [check_dataset(n, root, deep=args.deep) for n in names]
    if args.json:
        print(json.dumps({"root": str(root), "datasets": reports}, indent=2))
    else:
        print(f"data root: {root}")
        print(f"{'dataset':<15}{'status':<9}{'train':>8}{'test':>8}  path / problem")
        for r in reports:
            splits = dict(r["splits"])  # type: ignore[arg-type]
            where = r["path"] if r["status"] == "ok" else r.get("message", "")
            if r["status"] == "missing":
                where = f"not found (robustlab data download {r['name']})"
            print(
                f"{r['name']:<15}{r['status']:<9}{splits.get('train', '-'):>8}"
                f"{splits.get('test', '-'):>8}  {where}"
            )
    bad = [r for r in reports if r["status"] != "ok"]
    return 1 if args.names and bad else 0


def _info(args: argparse.Namespace) -> int:
    info = dataset_info(args.name)
    out: dict[str, Any] = {
        "name": info.name,
        "num_classes": info.num_classes,
        "shape": list(info.shape),
        "mean": list(info.mean),
        "std": list(info.std),
        "hflip": info.hflip,
        "splits": list(SPLITS[info.name]),
        "classes": list(info.classes),
    }
    try:
        out["path"] = str(locate_dataset(info.name, args.data_dir))
    except DataError as e:  # not downloaded yet: say so, still describe it
        out["path"] = None
        out["note"] = str(e)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for key, value in out.items():
        if key == "classes" and len(value) > 12:
            value = ", ".join(value[:12]) + f", ... ({len(value)} in all)"
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        print(f"{key:<12}{value}")
    return 0
