"""Content checksums: MD5 of files or of decompressed bytes, with a per-user record of files
already verified (keyed by path, size, mtime and ctime) so repeated loads skip the hashing."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from robustlab.data.paths import user_cache_dir
from robustlab.errors import DataError
from robustlab.io import write_json

__all__ = ["md5_bytes", "md5_file", "check_md5", "is_verified", "mark_verified"]

_LOCK = threading.Lock()
_MEMO: dict[str, str] = {}


def md5_bytes(data: bytes | memoryview) -> str:
    """Hex MD5 of an in-memory buffer."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def md5_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """Hex MD5 of a file's bytes, read in chunks."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _stamp_file() -> Path:
    return user_cache_dir() / "verified.json"


def _key(path: Path) -> str | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"


def _load_stamps() -> dict[str, str]:
    try:
        data = json.loads(_stamp_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_verified(path: str | os.PathLike[str], md5: str) -> bool:
    """True when this exact file (same path, size, mtime, ctime, inode) already matched ``md5``."""
    key = _key(Path(path))
    if key is None:
        return False
    with _LOCK:
        if _MEMO.get(key) == md5:
            return True
        stamps = _load_stamps()
        if stamps.get(key) == md5:
            _MEMO[key] = md5
            return True
    return False


def mark_verified(path: str | os.PathLike[str], md5: str) -> None:
    """Record that ``path`` matched ``md5`` (best effort: an unwritable cache is ignored)."""
    key = _key(Path(path))
    if key is None:
        return
    with _LOCK:
        _MEMO[key] = md5
        stamps = _load_stamps()
        prefix = key.split("|", 1)[0] + "|"
        stamps = {k: v for k, v in stamps.items() if not k.startswith(prefix)}  # drop stale
        stamps[key] = md5
        try:
            write_json(_stamp_file(), stamps)
        except OSError:
            pass


def check_md5(
    path: str | os.PathLike[str],
    expected: str,
    data: bytes | memoryview | None = None,
    *,
    verify: bool | None = None,
    what: str = "content",
) -> None:
    """Check ``path`` (or its decompressed ``data``) against the published MD5 ``expected``.

    ``verify=None`` hashes only files not verified before, ``True`` always hashes, ``False``
    never does (for files that are not the official release, e.g. test fixtures). Raises
    :class:`DataError` naming the file on a mismatch.
    """
    if verify is False:
        return
    if verify is None and is_verified(path, expected):
        return
    actual = md5_bytes(data) if data is not None else md5_file(path)
    if actual != expected:
        raise DataError(
            f"{path}: checksum mismatch ({what} MD5 {actual}, expected {expected}); the file is "
            "corrupt or not the official release: delete it and run `robustlab data download`"
        )
    mark_verified(path, expected)
