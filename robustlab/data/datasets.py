"""Dataset loading by name: where each dataset's official files sit under the data root, their
published checksums, and ``load_split(name, split)`` returning a verified :class:`Split`."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from robustlab.data.checksum import check_md5
from robustlab.data.formats import (
    CIFAR_RECORD,
    parse_cifar_binary,
    parse_cifar_pickle,
    parse_idx,
    read_cifar_meta,
    read_file_bytes,
    read_svhn_mat,
    read_tiny_imagenet,
    tiny_imagenet_files,
)
from robustlab.data.info import DATASETS, Split, canonical_name, with_classes
from robustlab.data.paths import resolve_data_root, user_cache_dir
from robustlab.errors import DataError
from robustlab.io import atomic_path

__all__ = ["load_split", "locate_dataset", "check_dataset", "SPLITS"]

PathLike = str | os.PathLike[str]

# Content MD5s (of the decompressed bytes for IDX files), as published with each release.
IDX_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}
CIFAR10_BIN_MD5 = {
    "data_batch_1.bin": "5dd7e06a14cb22eb9f671a540d1b7c25",
    "data_batch_2.bin": "5ea93a67294ea407fff1d09f752e9692",
    "data_batch_3.bin": "942cd6a4bcdd0dd3c604fbe906cb4421",
    "data_batch_4.bin": "ae636b3ba5c66a11e91e8cb52e771fcb",
    "data_batch_5.bin": "53f37980c15c3d472c316c40844f3f0d",
    "test_batch.bin": "803d5f7f4d78ea53de84dbe85f74fb6d",
}
CIFAR10_BIN_SIZE = 10_000 * CIFAR_RECORD
CIFAR10_PY_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
CIFAR100_PY_MD5 = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}
SVHN_MD5 = {
    "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
    "extra_32x32.mat": "a93ce644f1a588dc4d68dda5feec44a7",
}

TINY_CACHE_MIN_IMAGES = 1000  # Tiny-ImageNet splits this large keep a decoded copy in the cache

SPLITS: dict[str, tuple[str, ...]] = {
    "mnist": ("train", "test"),
    "fashion-mnist": ("train", "test"),
    "mnist-mini": ("train", "test"),
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "svhn": ("train", "test", "extra"),
    "tiny-imagenet": ("train", "test"),
}

# (sub-folder candidates relative to the data root, files any of which marks the layout)
_IDX_MARKERS = tuple(f"{p}-images-idx3-ubyte{gz}" for p in ("train", "t10k") for gz in (".gz", ""))
_LAYOUTS: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "mnist": [(d, _IDX_MARKERS) for d in ("mnist", "MNIST/raw", ".")],
    "fashion-mnist": [(d, _IDX_MARKERS) for d in ("fashion-mnist", "FashionMNIST/raw", ".")],
    "cifar10": [
        (d, markers)
        for markers in (("data_batch_1.bin", "test_batch.bin"), ("data_batch_1", "test_batch"))
        for d in (
            "cifar-10-batches-bin",
            "cifar10/cifar-10-batches-bin",
            "cifar-10-batches-py",
            "cifar10/cifar-10-batches-py",
            ".",
        )
        if not (d.endswith("-py") and markers[0].endswith(".bin"))
        and not (d.endswith("-bin") and not markers[0].endswith(".bin"))
    ],
    "cifar100": [
        (d, ("train", "test")) for d in ("cifar-100-python", "cifar100/cifar-100-python", ".")
    ],
    "svhn": [(d, ("train_32x32.mat", "test_32x32.mat")) for d in ("svhn", "SVHN", ".")],
    "tiny-imagenet": [
        (d, ("wnids.txt",)) for d in ("tiny-imagenet-200", "tiny-imagenet/tiny-imagenet-200", ".")
    ],
}

# Where `robustlab data download` puts each dataset (relative to the data root).
DOWNLOAD_DIRS = {
    "mnist": "mnist",
    "fashion-mnist": "fashion-mnist",
    "cifar10": "cifar-10-batches-bin",
    "cifar100": "cifar-100-python",
    "svhn": "svhn",
    "tiny-imagenet": "tiny-imagenet-200",
}


def locate_dataset(name: str, root: PathLike | None = None) -> Path:
    """The folder holding ``name``'s files under the data root (see ``resolve_data_root``).

    Accepts ``root/mnist/...`` as well as a root that is itself the dataset folder.
    """
    name = canonical_name(name)
    if name == "mnist-mini":
        return Path(__file__).with_name("embedded")
    base = resolve_data_root(root)
    for sub, markers in _LAYOUTS[name]:
        folder = (base / sub) if sub != "." else base
        if any((folder / m).is_file() for m in markers):
            return folder
    looked = ", ".join(sorted({str(base / s) for s, _ in _LAYOUTS[name]}))
    raise DataError(
        f"dataset {name!r} not found under {base} (looked in {looked}); run "
        f"`robustlab data download {name} --data-dir {base}` or pass the right --data-dir"
    )


def _idx_file(folder: Path, base: str) -> Path:
    for p in (folder / base, folder / f"{base}.gz"):
        if p.is_file():
            return p
    raise DataError(f"{folder / base}[.gz]: file not found (incomplete dataset folder)")


def _load_idx_pair(
    name: str, folder: Path, prefix: str, verify: bool | None
) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for kind, ndim in (("images-idx3-ubyte", 3), ("labels-idx1-ubyte", 1)):
        base = f"{prefix}-{kind}"
        path = _idx_file(folder, base)
        data = read_file_bytes(path)
        arrays.append(parse_idx(data, path, expect_ndim=ndim))
        check_md5(path, IDX_MD5[name][base], data, verify=verify, what="decompressed content")
    images, labels = arrays
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{folder}: {images.shape[0]} images but {labels.shape[0]} labels")
    if labels.max(initial=0) > 9:
        raise DataError(f"{folder}: labels outside 0..9")
    return images[:, None], labels.astype(np.int64)


def _load_cifar10(folder: Path, split: str, verify: bool | None) -> tuple[np.ndarray, np.ndarray]:
    binary = (folder / "data_batch_1.bin").is_file() or (folder / "test_batch.bin").is_file()
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    parts = []
    for n in names:
        # parse first, so a truncated file is reported as truncated, then check the checksum
        if binary:
            path = folder / f"{n}.bin"
            data = read_file_bytes(path)
            if len(data) != CIFAR10_BIN_SIZE and len(data) % CIFAR_RECORD == 0:
                raise DataError(
                    f"{path}: truncated or wrong size ({len(data)} bytes, the official batch "
                    f"has {CIFAR10_BIN_SIZE})"
                )
            parts.append(parse_cifar_binary(data, path))
            check_md5(path, CIFAR10_BIN_MD5[path.name], data, verify=verify)
        else:
            path = folder / n
            data = read_file_bytes(path)
            parts.append(parse_cifar_pickle(data, path, "labels", 10))
            check_md5(path, CIFAR10_PY_MD5[n], data, verify=verify)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _load_cifar100(folder: Path, split: str, verify: bool | None) -> tuple[np.ndarray, np.ndarray]:
    path = folder / split
    data = read_file_bytes(path)
    out = parse_cifar_pickle(data, path, "fine_labels", 100)
    check_md5(path, CIFAR100_PY_MD5[split], data, verify=verify)
    return out


def _load_svhn(folder: Path, split: str, verify: bool | None) -> tuple[np.ndarray, np.ndarray]:
    path = folder / f"{split}_32x32.mat"
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    out = read_svhn_mat(path)
    check_md5(path, SVHN_MD5[path.name], verify=verify, what="file")
    return out


def count_tiny_imagenet(folder: Path) -> dict[str, int]:
    """Image counts of a Tiny-ImageNet folder's splits, checking its layout without decoding."""
    counts = {}
    for split, official in (("train", "train"), ("test", "val")):
        paths, _, wnids = tiny_imagenet_files(folder, official)
        missing = next((p for p in paths if not p.is_file()), None)
        if missing is not None:
            raise DataError(f"{missing}: file not found")
        if len(wnids) != 200:
            raise DataError(f"{folder}/wnids.txt lists {len(wnids)} classes, expected 200")
        counts[split] = len(paths)
    return counts


def _read_tiny_imagenet_cached(
    folder: Path, split: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Tiny-ImageNet decoded once: large splits are kept as a .npy in the per-user cache,
    keyed by every file's name, size and modification time (any change re-decodes)."""
    paths, labels, wnids = tiny_imagenet_files(folder, split)
    if len(paths) < TINY_CACHE_MIN_IMAGES:  # small folders decode fast: keep the cache clean
        return read_tiny_imagenet(folder, split)
    h = hashlib.md5(usedforsecurity=False)
    h.update(f"{folder.resolve()}|{split}|{','.join(wnids)}".encode())
    for p, y in zip(paths, labels.tolist(), strict=True):
        st = p.stat()
        h.update(f"{p.name}|{y}|{st.st_size}|{st.st_mtime_ns};".encode())
    cache = user_cache_dir() / "decoded" / f"tiny-imagenet-{split}-{h.hexdigest()}.npy"
    shape = (len(paths), 3, 64, 64)
    if cache.is_file():
        try:
            images = np.load(cache, allow_pickle=False)
            if images.shape == shape and images.dtype == np.uint8:
                return images, labels, wnids
        except (OSError, ValueError):
            pass
    images, labels2, _ = read_tiny_imagenet(folder, split)
    try:
        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(images), allow_pickle=False)
    except OSError:
        pass  # an unwritable cache only costs speed
    return images, labels2, wnids


def _tiny_classes(folder: Path, wnids: list[str]) -> tuple[str, ...]:
    words = folder / "words.txt"
    names: dict[str, str] = {}
    if words.is_file():
        for line in words.read_text(encoding="utf-8", errors="replace").splitlines():
            wnid, _, text = line.partition("\t")
            names[wnid.strip()] = text.split(",")[0].strip()
    return tuple(names.get(w) or w for w in wnids)


def load_split(
    name: str, split: str = "train", root: PathLike | None = None, *, verify: bool | None = None
) -> Split:
    """Load one split of a dataset as uint8 (N, C, H, W) images and int64 labels.

    ``verify``: None checks each file's published MD5 the first time it is seen (then
    remembers it, keyed by size and modification time), True always re-checks, False never
    checks (for files that are not the official release). Tiny-ImageNet has no published
    per-file checksums (only the zip's, checked on download). Its ``test`` split is the
    official validation set, since the test labels were never released.
    """
    name = canonical_name(name)
    split = str(split).lower()
    if name == "tiny-imagenet" and split == "val":
        split = "test"
    if split not in SPLITS[name]:
        raise DataError(f"{name} has splits {', '.join(SPLITS[name])}, not {split!r}")
    info = DATASETS[name]
    if name == "mnist-mini":
        from robustlab.data.embedded_data import load_mnist_mini

        images, labels = load_mnist_mini(split, verify=verify)
    else:
        folder = locate_dataset(name, root)
        if name in IDX_MD5:
            images, labels = _load_idx_pair(
                name, folder, "train" if split == "train" else "t10k", verify
            )
        elif name == "cifar10":
            images, labels = _load_cifar10(folder, split, verify)
            meta = folder / "batches.meta"
            if meta.is_file():
                check_md5(meta, CIFAR10_PY_MD5["batches.meta"], verify=verify)
        elif name == "cifar100":
            images, labels = _load_cifar100(folder, split, verify)
            meta = folder / "meta"
            if meta.is_file():
                check_md5(meta, CIFAR100_PY_MD5["meta"], verify=verify)
                classes = read_cifar_meta(meta, "fine_label_names")
                if classes and len(classes) == 100:
                    info = with_classes(info, classes)
        elif name == "svhn":
            images, labels = _load_svhn(folder, split, verify)
        else:  # tiny-imagenet
            official = "train" if split == "train" else "val"
            images, labels, wnids = _read_tiny_imagenet_cached(folder, official)
            if len(wnids) != info.num_classes:
                raise DataError(f"{folder}/wnids.txt lists {len(wnids)} classes, expected 200")
            info = with_classes(info, _tiny_classes(folder, wnids))
    if tuple(images.shape[1:]) != info.shape:
        raise DataError(f"{name}: images have shape {images.shape[1:]}, expected {info.shape}")
    images = np.ascontiguousarray(images)
    if not images.flags.writeable:  # views of the file's bytes: copy so tensors own their memory
        images = images.copy()
    return Split(torch.from_numpy(images), torch.from_numpy(np.array(labels, dtype=np.int64)), info)


def check_dataset(
    name: str, root: PathLike | None = None, *, deep: bool = False
) -> dict[str, object]:
    """Whether ``name`` is present and valid under the data root: loads every split with
    checksums forced (Tiny-ImageNet, which has no per-file checksums, is checked for its
    layout and image counts; ``deep=True`` decodes every JPEG). Returns ``{"name",
    "status": "ok"|"missing"|"invalid", "path", "splits": {split: count}, "message"}``;
    never raises for a missing or bad dataset."""
    name = canonical_name(name)
    report: dict[str, object] = {"name": name, "status": "ok", "path": None, "splits": {}}
    try:
        report["path"] = str(locate_dataset(name, root))
    except DataError as e:
        report.update(status="missing", message=str(e))
        return report
    counts: dict[str, int] = {}
    if name == "tiny-imagenet" and not deep:
        try:
            counts = count_tiny_imagenet(Path(str(report["path"])))
        except DataError as e:
            report.update(status="invalid", message=str(e))
        report["splits"] = counts
        return report
    for split in SPLITS[name]:
        if name == "svhn" and split == "extra":
            folder = Path(str(report["path"]))
            if not (folder / "extra_32x32.mat").is_file():
                continue
        try:
            counts[split] = len(load_split(name, split, root, verify=True))
        except DataError as e:
            report.update(status="invalid", message=str(e))
            break
    report["splits"] = counts
    return report
