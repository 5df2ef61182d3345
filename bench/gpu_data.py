"""Carry CIFAR-10's binary batches to a machine that takes only a few tens of MiB per transfer.

Each ``*.bin`` batch (10,000 records of 1 label byte + 3,072 pixel bytes) is packed losslessly
into a WebP mosaic of its images (100 x 100 tiles of 32 x 32, RGB; about 55% of the raw size,
against 75% for xz) plus its 10,000 label bytes; ``unpack`` rebuilds the official bytes and
refuses any file whose MD5 differs from the one recorded at packing (the published MD5s of the
official release, listed in the data's README). Needs Pillow with WebP support on both sides.

    python bench/gpu_data.py pack DATA_DIR OUT_DIR data_batch_1.bin data_batch_2.bin ...
    python bench/gpu_data.py unpack IN_DIR DEST_DIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

RECORD, SIDE, GRID = 3073, 32, 100  # bytes per record, image side, tiles per mosaic row


def _mosaic(pixels: np.ndarray) -> np.ndarray:
    """(N, 3072) channel-planar pixels -> (GRID*32, GRID*32, 3) HWC mosaic, row-major tiles."""
    return (pixels.reshape(GRID, GRID, 3, SIDE, SIDE).transpose(0, 3, 1, 4, 2)
            .reshape(GRID * SIDE, GRID * SIDE, 3))  # fmt: skip


def _unmosaic(image: np.ndarray) -> np.ndarray:
    return (image.reshape(GRID, SIDE, GRID, SIDE, 3).transpose(0, 2, 4, 1, 3)
            .reshape(GRID * GRID, 3 * SIDE * SIDE))  # fmt: skip


def pack(src: Path, out: Path, names: list[str], method: int = 6) -> None:
    """Pack ``src/NAME`` for each name into ``out`` (WebP ``method`` 0-6: 6 is the smallest
    and slowest, about a minute per batch)."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for name in names:
        data = (src / name).read_bytes()
        if len(data) != GRID * GRID * RECORD:
            raise SystemExit(f"{src / name}: {len(data)} bytes, not {GRID * GRID} records")
        raw = np.frombuffer(data, dtype=np.uint8).reshape(GRID * GRID, RECORD)
        (out / f"{name}.labels").write_bytes(raw[:, 0].tobytes())
        image = Image.fromarray(_mosaic(raw[:, 1:]))
        image.save(out / f"{name}.webp", format="WEBP", lossless=True, quality=100, method=method)
        manifest[name] = hashlib.md5(data).hexdigest()
        print(f"{name}: {(out / f'{name}.webp').stat().st_size / 1e6:.1f} MB", flush=True)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def unpack(src: Path, dest: Path) -> None:
    """Rebuild every batch of ``src``'s manifest into ``dest``, each checked against its MD5."""
    from PIL import Image

    manifest = json.loads((src / "manifest.json").read_text())
    dest.mkdir(parents=True, exist_ok=True)
    for name, md5 in manifest.items():
        with Image.open(src / f"{name}.webp") as im:
            pixels = _unmosaic(np.asarray(im.convert("RGB")))
        labels = np.frombuffer((src / f"{name}.labels").read_bytes(), dtype=np.uint8)
        data = np.concatenate([labels[:, None], pixels], axis=1).tobytes()
        if hashlib.md5(data).hexdigest() != md5:
            raise SystemExit(f"{name}: rebuilt bytes do not match MD5 {md5}")
        tmp = dest / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, dest / name)
        print(f"{name}: rebuilt, MD5 {md5} verified", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("names", nargs="+")
    p.add_argument("--method", type=int, default=6, choices=range(7), help="WebP effort")
    u = sub.add_parser("unpack")
    u.add_argument("src", type=Path)
    u.add_argument("dest", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        pack(args.src, args.out, args.names, args.method)
    else:
        unpack(args.src, args.dest)


if __name__ == "__main__":
    main(sys.argv[1:])
