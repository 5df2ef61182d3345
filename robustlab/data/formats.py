"""Readers for the official on-disk formats (IDX, CIFAR binary and python pickles, SVHN .mat,
Tiny-ImageNet folders), returning numpy uint8 NCHW images and int64 labels. Each raises
:class:`DataError` naming the file that is missing, truncated or malformed."""

from __future__ import annotations

import gzip
import os
import pickle
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from robustlab.errors import DataError

__all__ = [
    "read_file_bytes",
    "parse_idx",
    "parse_cifar_binary",
    "load_cifar_pickle",
    "parse_cifar_pickle",
    "read_svhn_mat",
    "read_cifar_meta",
    "read_tiny_imagenet",
    "tiny_imagenet_files",
]

PathLike = str | os.PathLike[str]


def read_file_bytes(path: PathLike) -> bytes:
    """The file's bytes, gunzipped when the name ends in ``.gz`` (a bad gzip is a DataError)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise DataError(f"{path}: truncated gzip file (the stream ends early)") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as e:
        raise DataError(f"{path}: corrupt gzip file ({e})") from None


# --------------------------------------------------------------------------- IDX (MNIST)


def parse_idx(data: bytes, path: PathLike, expect_ndim: int | None = None) -> np.ndarray:
    """Parse an IDX file (the MNIST / Fashion-MNIST format) holding unsigned bytes."""
    if len(data) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(data)} bytes, no header)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number {data[:4].hex()})")
    dtype_code, ndim = data[2], data[3]
    if dtype_code != 0x08:
        raise DataError(f"{path}: IDX element type 0x{dtype_code:02x} is not unsigned byte")
    if expect_ndim is not None and ndim != expect_ndim:
        raise DataError(f"{path}: IDX file has {ndim} dimensions, expected {expect_ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(
            f"{path}: IDX file {state} ({len(data)} bytes, header says {expected} for {dims})"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


# --------------------------------------------------------------------------- CIFAR binary

CIFAR_RECORD = 1 + 3 * 32 * 32


def parse_cifar_binary(data: bytes, path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Parse a CIFAR-10 ``*.bin`` batch: records of 1 label byte + 3072 pixel bytes (R, G, B
    planes of 32x32). Returns images (N, 3, 32, 32) uint8 and labels (N,) int64."""
    if len(data) == 0 or len(data) % CIFAR_RECORD:
        raise DataError(
            f"{path}: truncated CIFAR-10 binary batch ({len(data)} bytes is not a whole number "
            f"of {CIFAR_RECORD}-byte records)"
        )
    rec = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    labels = rec[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DataError(f"{path}: label {int(labels.max())} outside CIFAR-10's 0..9 (corrupt?)")
    return rec[:, 1:].reshape(-1, 3, 32, 32), labels


# --------------------------------------------------------------------------- CIFAR python


def _latin1_encode(obj: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    # Python 3 pickles of bytes at protocol <= 2 call _codecs.encode(text, "latin1").
    if encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"refusing codec {encoding!r} in a dataset pickle")
    return obj.encode("latin1", errors)


def _numpy_reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return _reconstruct


def _numpy_scalar() -> Any:
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    return scalar


class _DataUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: any other global is refused, so a
    malicious pickle cannot run code."""

    _ALLOWED = {
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy.core.multiarray", "scalar"): _numpy_scalar,
        ("numpy._core.multiarray", "scalar"): _numpy_scalar,
        ("_codecs", "encode"): lambda: _latin1_encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        factory = self._ALLOWED.get((module, name))
        if factory is None:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a dataset file")
        return factory()


def load_cifar_pickle(data: bytes, path: PathLike) -> dict[str, Any]:
    """Safely unpickle a CIFAR python batch (a dict of bytes, lists and numpy arrays); keys are
    returned as ``str``."""
    import io

    try:
        obj = _DataUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError) as e:
        kind = "truncated" if isinstance(e, EOFError) else "corrupt or unsafe"
        raise DataError(f"{path}: {kind} CIFAR python pickle ({e or type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: CIFAR pickle holds {type(obj).__name__}, expected a dict")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def parse_cifar_pickle(
    data: bytes, path: PathLike, label_key: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from a CIFAR-10/100 python batch;
    ``label_key`` is ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100)."""
    batch = load_cifar_pickle(data, path)
    if "data" not in batch or label_key not in batch:
        raise DataError(f"{path}: CIFAR pickle lacks 'data' or {label_key!r} (keys {list(batch)})")
    images = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3072:
        raise DataError(
            f"{path}: CIFAR 'data' must be uint8 (N, 3072), got {images.dtype} {images.shape}"
        )
    if labels.shape != (images.shape[0],):
        raise DataError(f"{path}: {images.shape[0]} images but {labels.shape} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: labels outside 0..{num_classes - 1}")
    return images.reshape(-1, 3, 32, 32), labels


def read_cifar_meta(path: PathLike, key: str) -> tuple[str, ...] | None:
    """Class names from a CIFAR ``batches.meta``/``meta`` pickle (None if absent)."""
    path = Path(path)
    if not path.is_file():
        return None
    meta = load_cifar_pickle(read_file_bytes(path), path)
    names = meta.get(key)
    if not isinstance(names, list):
        return None
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)


# --------------------------------------------------------------------------- SVHN


def read_svhn_mat(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from an SVHN ``*_32x32.mat`` file
    (MATLAB v5: ``X`` of shape (32, 32, 3, N), ``y`` of shape (N, 1) with 10 meaning digit 0)."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError(
            "reading SVHN .mat files needs scipy: pip install scipy (or robustlab[test])"
        ) from None
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        mat = loadmat(str(path), variable_names=["X", "y"])
    except Exception as e:  # scipy raises ValueError/TypeError/OSError on bad files
        raise DataError(f"{path}: truncated or corrupt MATLAB file ({e})") from None
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path}: SVHN .mat file lacks the 'X' or 'y' variable")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise DataError(f"{path}: SVHN 'X' must be uint8 (32, 32, 3, N), got {x.dtype} {x.shape}")
    if y.shape[0] != x.shape[3]:
        raise DataError(f"{path}: {x.shape[3]} images but {y.shape[0]} labels")
    labels = y.astype(np.int64)
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise DataError(f"{path}: SVHN labels must be 1..10, got {labels.min()}..{labels.max()}")
    labels %= 10  # 10 is the digit 0
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), labels


# --------------------------------------------------------------------------- Tiny-ImageNet


def _decode_jpegs(paths: list[Path], size: int = 64) -> np.ndarray:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DataError(
            "reading Tiny-ImageNet JPEGs needs Pillow: pip install pillow (or robustlab[test])"
        ) from None
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)

    def decode(i: int) -> None:
        p = paths[i]
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")  # a few Tiny-ImageNet images are grayscale
                if im.size != (size, size):
                    raise DataError(f"{p}: image is {im.size[0]}x{im.size[1]}, expected 64x64")
                out[i] = np.asarray(im)
        except FileNotFoundError:
            raise DataError(f"{p}: file not found") from None
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise DataError(f"{p}: truncated or corrupt JPEG ({e})") from None

    workers = min(8, os.cpu_count() or 1) if len(paths) >= 256 else 1
    if workers == 1:
        for i in range(len(paths)):
            decode(i)
    else:  # Pillow releases the GIL while decoding
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(decode, range(len(paths)), chunksize=256))
    return out.transpose(0, 3, 1, 2)


def read_tiny_imagenet(folder: PathLike, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (N, 3, 64, 64), labels and the WordNet ids from a ``tiny-imagenet-200/`` folder.

    ``split="train"`` reads ``train/<wnid>/images/*.JPEG``; ``"val"`` reads ``val/images`` with
    labels from ``val/val_annotations.txt`` (the official test labels were never released).
    Class indices follow the order of ``wnids.txt``.
    """
    paths, labels, wnids = tiny_imagenet_files(folder, split)
    return _decode_jpegs(paths), labels, wnids


def tiny_imagenet_files(folder: PathLike, split: str) -> tuple[list[Path], np.ndarray, list[str]]:
    """The image paths, labels and WordNet ids of a Tiny-ImageNet split (no decoding)."""
    folder = Path(folder)
    wnid_file = folder / "wnids.txt"
    if not wnid_file.is_file():
        raise DataError(f"{wnid_file}: file not found (not a tiny-imagenet-200 folder?)")
    wnids = [w.strip() for w in wnid_file.read_text(encoding="utf-8").split() if w.strip()]
    if len(set(wnids)) != len(wnids) or not wnids:
        raise DataError(f"{wnid_file}: empty or duplicated WordNet ids")
    index = {w: i for i, w in enumerate(wnids)}
    paths: list[Path] = []
    labels: list[int] = []
    if split == "train":
        for w in wnids:
            img_dir = folder / "train" / w / "images"
            if not img_dir.is_dir():
                raise DataError(f"{img_dir}: folder not found (incomplete Tiny-ImageNet train set)")
            files = sorted(p for p in img_dir.iterdir() if p.suffix.upper() == ".JPEG")
            paths += files
            labels += [index[w]] * len(files)
    elif split == "val":
        ann = folder / "val" / "val_annotations.txt"
        if not ann.is_file():
            raise DataError(f"{ann}: file not found (incomplete Tiny-ImageNet val set)")
        for n, line in enumerate(ann.read_text(encoding="utf-8").splitlines(), 1):
            parts = line.split("\t")
            if not line.strip():
                continue
            if len(parts) < 2 or parts[1] not in index:
                raise DataError(f"{ann}:{n}: malformed line or unknown WordNet id: {line!r}")
            paths.append(folder / "val" / "images" / parts[0])
            labels.append(index[parts[1]])
    else:
        raise DataError(f"Tiny-ImageNet has splits 'train' and 'val', not {split!r}")
    if not paths:
        raise DataError(f"{folder}: no Tiny-ImageNet {split} images found")
    return paths, np.asarray(labels, dtype=np.int64), wnids
