"""Downloads against a local HTTP server on 127.0.0.1 (never the internet): MD5 checks,
atomic results, resume after an interrupted transfer, archive extraction."""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import robustlab.data.download as dl
from robustlab.data import load_split
from robustlab.errors import DataError


class _Server:
    """Serves ``files`` by name; supports ``Range: bytes=N-``; can cut a response short once."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut_once: dict[str, int] = {}  # name -> bytes sent before closing the connection
        self.requests: list[tuple[str, str | None]] = []
        self.ignore_range = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                server.requests.append((name, rng))
                if server.ignore_range:
                    rng = None
                data = server.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                if start >= len(data):
                    self.send_error(416)
                    return
                body = data[start:]
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body)))
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                cut = server.cut_once.pop(name, None)
                self.wfile.write(body if cut is None else body[:cut])
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server(monkeypatch, tmp_path) -> Iterator[_Server]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(dl.ENV_MIRROR, raising=False)
    s = _Server()
    yield s
    s.close()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _serve_mnist(server: _Server, shared_data: Path, monkeypatch) -> dict[str, bytes]:
    """Serve the real MNIST files; our copies were re-gzipped, so their .gz MD5s replace the
    official ones (the content MD5s checked after download stay the official ones)."""
    files = {
        r.filename: (shared_data / "mnist" / r.filename).read_bytes() for r in dl.SOURCES["mnist"]
    }
    server.files.update(files)
    patched = [replace(r, md5=_md5(files[r.filename])) for r in dl.SOURCES["mnist"]]
    monkeypatch.setitem(dl.SOURCES, "mnist", patched)
    return files


def test_download_mnist_from_mirror(server, shared_data, tmp_path, monkeypatch):
    files = _serve_mnist(server, shared_data, monkeypatch)
    root = tmp_path / "data"
    monkeypatch.setenv(dl.ENV_MIRROR, server.url)
    report = dl.download_dataset("mnist", root)
    assert report["status"] == "ok" and report["splits"] == {"train": 60000, "test": 10000}
    for name, data in files.items():
        assert (root / "mnist" / name).read_bytes() == data
    assert not list(root.rglob("*.part"))
    assert len(load_split("mnist", "test", root)) == 10000
    n = len(server.requests)
    dl.download_dataset("mnist", root)  # already there: nothing fetched
    assert len(server.requests) == n


def test_corrupt_download_is_rejected_and_removed(server, tmp_path):
    good = b"official bytes " * 1000
    res = dl.Resource("file.bin", (server.url + "file.bin",), _md5(good), None, "x/file.bin")
    server.files["file.bin"] = good[:500] + b"X" + good[501:]
    dest = tmp_path / "x" / "file.bin"
    with pytest.raises(DataError, match=r"file\.bin has MD5 .*expected " + _md5(good)):
        dl.fetch(res, dest)
    assert not dest.exists() and not dest.with_name("file.bin.part").exists()
    server.files["file.bin"] = good
    assert dl.fetch(res, dest).read_bytes() == good


def test_interrupted_download_resumes_with_range(server, tmp_path):
    data = bytes(range(256)) * 4000
    res = dl.Resource("big.bin", ("unused",), _md5(data), None, "big.bin")
    server.files["big.bin"] = data
    server.cut_once["big.bin"] = 300_000
    dest = tmp_path / "big.bin"
    with pytest.raises(DataError, match="connection closed after 300000 of 1024000 bytes"):
        dl.fetch(res, dest, mirror=server.url)
    part = tmp_path / "big.bin.part"
    assert part.stat().st_size == 300_000 and not dest.exists()
    dl.fetch(res, dest, mirror=server.url)
    assert dest.read_bytes() == data and not part.exists()
    assert server.requests[-1] == ("big.bin", "bytes=300000-")


def test_server_without_range_support_restarts(server, tmp_path):
    data = bytes(range(256)) * 1000
    res = dl.Resource("r.bin", ("unused",), _md5(data), None, "r.bin")
    server.files["r.bin"] = data
    (tmp_path / "r.bin.part").write_bytes(data[:1000])
    server.ignore_range = True
    assert dl.fetch(res, tmp_path / "r.bin", mirror=server.url).read_bytes() == data
    assert server.requests == [("r.bin", "bytes=1000-")]


def test_unreachable_source_is_a_clear_error(server, tmp_path):
    res = dl.Resource("gone.bin", ("unused",), "0" * 32, None, "gone.bin")
    with pytest.raises(DataError, match=r"could not download gone\.bin: .*gone\.bin"):
        dl.fetch(res, tmp_path / "gone.bin", mirror=server.url)


def _tiny_imagenet_zip() -> bytes:
    from PIL import Image

    wnids = [f"n{k:08d}" for k in range(200)]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("tiny-imagenet-200/wnids.txt", "\n".join(wnids))
        for k, w in enumerate(wnids):
            zf.writestr(f"tiny-imagenet-200/train/{w}/images/", "")
            if k < 3:
                jpg = io.BytesIO()
                Image.new("RGB", (64, 64), (k * 50, 0, 0)).save(jpg, format="JPEG")
                zf.writestr(f"tiny-imagenet-200/train/{w}/images/{w}_0.JPEG", jpg.getvalue())
        zf.writestr("tiny-imagenet-200/val/images/val_0.JPEG", jpg.getvalue())
        zf.writestr(
            "tiny-imagenet-200/val/val_annotations.txt", f"val_0.JPEG\t{wnids[2]}\t0\t0\t1\t1\n"
        )
    return buf.getvalue()


def test_archive_download_extracts_atomically(server, tmp_path, monkeypatch):
    pytest.importorskip("PIL")
    archive = _tiny_imagenet_zip()
    server.files["tiny-imagenet-200.zip"] = archive
    res = replace(dl.SOURCES["tiny-imagenet"][0], md5=_md5(archive))
    monkeypatch.setitem(dl.SOURCES, "tiny-imagenet", [res])
    root = tmp_path / "data"
    report = dl.download_dataset("tiny-imagenet", root, mirror=server.url)
    assert report["status"] == "ok" and report["splits"] == {"train": 3, "test": 1}
    assert not (root / "tiny-imagenet-200.zip").exists()
    assert sorted(p.name for p in root.iterdir()) == ["tiny-imagenet-200"]  # no scratch left
    assert load_split("tiny-imagenet", "val", root).labels.tolist() == [2]


def test_archive_with_unsafe_paths_is_refused(server, tmp_path, monkeypatch):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../evil.txt", "x")
    server.files["tiny-imagenet-200.zip"] = buf.getvalue()
    res = replace(dl.SOURCES["tiny-imagenet"][0], md5=_md5(buf.getvalue()))
    monkeypatch.setitem(dl.SOURCES, "tiny-imagenet", [res])
    with pytest.raises(DataError, match="unsafe path"):
        dl.download_dataset("tiny-imagenet", tmp_path / "data", mirror=server.url)
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "data" / "tiny-imagenet-200").exists()


def test_cli_download_and_check(server, shared_data, tmp_path, monkeypatch, capsys):
    import json

    from robustlab.cli import main

    _serve_mnist(server, shared_data, monkeypatch)
    root = tmp_path / "d"
    rc = main(["data", "download", "mnist", "--data-dir", str(root), "--mirror", server.url, "-q"])
    assert rc == 0 and "mnist: ok (train 60000, test 10000)" in capsys.readouterr().out
    assert main(["data", "check", "--data-dir", str(root), "--json"]) == 0
    reports = {r["name"]: r for r in json.loads(capsys.readouterr().out)["datasets"]}
    assert reports["mnist"]["status"] == "ok" and reports["cifar10"]["status"] == "missing"
    assert main(["data", "check", "cifar10", "--data-dir", str(root)]) == 1
