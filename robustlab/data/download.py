"""Downloads from the official sources: resumable (HTTP Range on a ``.part`` file), MD5-checked,
and atomic (a file or extracted folder appears under its final name only once it is whole)."""

from __future__ import annotations

import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from robustlab import __version__
from robustlab.data.checksum import is_verified, mark_verified, md5_file
from robustlab.data.datasets import check_dataset
from robustlab.data.info import canonical_name
from robustlab.data.paths import resolve_data_root
from robustlab.errors import DataError

__all__ = ["Resource", "SOURCES", "download_dataset", "fetch", "ENV_MIRROR"]

ENV_MIRROR = "ROBUSTLAB_DATA_MIRROR"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Resource:
    """One file to fetch: its name, official URLs (tried in order), the MD5 of the file as
    served, how to unpack it (None, "tar" or "zip") and what it becomes under the data root
    (the file's path, or the top folder of the archive)."""

    filename: str
    urls: tuple[str, ...]
    md5: str
    extract: str | None
    target: str


_MNIST_BASES = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_FASHION_BASE = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_TORONTO = "https://www.cs.toronto.edu/~kriz/"
_SVHN = "http://ufldl.stanford.edu/housenumbers/"


def _idx(folder: str, bases: tuple[str, ...], md5s: dict[str, str]) -> list[Resource]:
    return [
        Resource(f, tuple(b + f for b in bases), m, None, f"{folder}/{f}") for f, m in md5s.items()
    ]


SOURCES: dict[str, list[Resource]] = {
    "mnist": _idx(
        "mnist",
        _MNIST_BASES,
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion-mnist": _idx(
        "fashion-mnist",
        (_FASHION_BASE,),
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
    "cifar10": [
        Resource(
            "cifar-10-binary.tar.gz",
            (_TORONTO + "cifar-10-binary.tar.gz",),
            "c32a1d4ab5d03f1284b67883e8d87530",
            "tar",
            "cifar-10-batches-bin",
        )
    ],
    "cifar100": [
        Resource(
            "cifar-100-python.tar.gz",
            (_TORONTO + "cifar-100-python.tar.gz",),
            "eb9058c3a382ffc7106e4002c42a8d85",
            "tar",
            "cifar-100-python",
        )
    ],
    "svhn": [
        Resource(f, (_SVHN + f,), m, None, f"svhn/{f}")
        for f, m in (
            ("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
            ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
        )
    ],
    "tiny-imagenet": [
        Resource(
            "tiny-imagenet-200.zip",
            ("http://cs231n.stanford.edu/tiny-imagenet-200.zip",),
            "90528d7ca1a48142e341f4ef8d21d0de",
            "zip",
            "tiny-imagenet-200",
        )
    ],
}

Progress = Callable[[int, int | None], None]


def _urls(resource: Resource, mirror: str | None) -> tuple[str, ...]:
    mirror = mirror if mirror is not None else os.environ.get(ENV_MIRROR) or None
    if mirror:
        return (mirror.rstrip("/") + "/" + resource.filename,)
    return resource.urls


def _get(url: str, part: Path, timeout: float, progress: Progress | None) -> None:
    """Append the rest of ``url`` to ``part`` (resuming with a Range request if it exists)."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"robustlab/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left to fetch: the .part is complete
            return
        raise
    with resp:
        if offset and resp.status != 206:  # server ignored the range: start over
            offset = 0
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        got = offset
        with open(part, "ab" if offset else "wb") as f:
            try:
                while block := resp.read(_CHUNK):
                    f.write(block)
                    got += len(block)
                    if progress:
                        progress(got, total)
            except http.client.IncompleteRead as e:
                f.write(e.partial)
                got += len(e.partial)
            f.flush()
            os.fsync(f.fileno())
    if total is not None and got < total:
        raise DataError(
            f"{url}: connection closed after {got} of {total} bytes; run the download again "
            f"to resume from {part}"
        )


def fetch(
    resource: Resource,
    dest: Path,
    *,
    mirror: str | None = None,
    timeout: float = 60.0,
    progress: Progress | None = None,
) -> Path:
    """Download ``resource`` to ``dest`` via ``dest.part``, check its MD5, then rename.

    An interrupted transfer leaves ``dest.part`` to be resumed by the next call; a file whose
    MD5 does not match is deleted (nothing is left that looks complete) and raises DataError.
    """
    if dest.is_file() and (is_verified(dest, resource.md5) or md5_file(dest) == resource.md5):
        mark_verified(dest, resource.md5)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    errors: list[str] = []
    for url in _urls(resource, mirror):
        try:
            _get(url, part, timeout, progress)
        except DataError:
            raise
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            errors.append(f"{url}: {getattr(e, 'reason', None) or e}")
            continue
        actual = md5_file(part)
        if actual != resource.md5:
            part.unlink()
            raise DataError(
                f"{url}: downloaded {resource.filename} has MD5 {actual}, expected "
                f"{resource.md5}; the partial file was deleted, try again or use another mirror"
            )
        os.replace(part, dest)
        mark_verified(dest, resource.md5)
        return dest
    raise DataError(f"could not download {resource.filename}: " + "; ".join(errors))


def _safe_members(names: list[str], archive: Path) -> None:
    for n in names:
        p = Path(n)
        if p.is_absolute() or ".." in p.parts:
            raise DataError(f"{archive}: unsafe path {n!r} in archive; refusing to extract")


def _extract(archive: Path, kind: str, root: Path, target: str) -> Path:
    """Unpack ``archive`` in a scratch folder under ``root`` and move ``target`` into place."""
    final = root / target
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=root) as tmp:
        try:
            if kind == "tar":
                with tarfile.open(archive) as tf:
                    _safe_members(tf.getnames(), archive)
                    tf.extractall(tmp, filter="data")
            else:
                with zipfile.ZipFile(archive) as zf:
                    _safe_members(zf.namelist(), archive)
                    zf.extractall(tmp)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
            raise DataError(f"{archive}: corrupt archive ({e})") from None
        unpacked = Path(tmp) / target
        if not unpacked.is_dir():
            raise DataError(f"{archive}: archive has no top folder {target!r}")
        old = None
        if final.exists():  # an earlier, invalid copy: move it aside, delete it afterwards
            old = Path(tempfile.mkdtemp(prefix=".old-", dir=root))
            os.replace(final, old / target)
        os.replace(unpacked, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _tqdm_progress(name: str) -> tuple[Progress, Callable[[], None]]:
    from tqdm import tqdm

    bar = tqdm(desc=name, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr)

    def update(got: int, total: int | None) -> None:
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(got - bar.n)

    return update, bar.close


def download_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    mirror: str | None = None,
    keep_archive: bool = False,
    progress: bool = False,
    timeout: float = 60.0,
) -> dict[str, object]:
    """Fetch ``name`` from its official source (or ``mirror`` / ``$ROBUSTLAB_DATA_MIRROR``, a
    base URL holding the same file names) into the data root, then check it.

    Files already present and valid are not fetched again. Returns the
    :func:`~robustlab.data.check_dataset` report of the result.
    """
    name = canonical_name(name)
    if name == "mnist-mini":
        return check_dataset(name)
    base = resolve_data_root(root, create=True)
    before = check_dataset(name, base)
    if before["status"] == "ok":
        return before
    for res in SOURCES[name]:
        on_progress, close = _tqdm_progress(res.filename) if progress else (None, lambda: None)
        try:
            if res.extract is None:
                fetch(res, base / res.target, mirror=mirror, timeout=timeout, progress=on_progress)
            else:
                archive = fetch(
                    res, base / res.filename, mirror=mirror, timeout=timeout, progress=on_progress
                )
                _extract(archive, res.extract, base, res.target)
                if not keep_archive:
                    archive.unlink()
        finally:
            close()
    report = check_dataset(name, base)
    if report["status"] != "ok":
        raise DataError(f"{name}: downloaded files fail their check: {report.get('message')}")
    return report
