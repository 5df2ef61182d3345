"""``robustlab data`` command line: bad input gives one-line errors with exit status 2."""

from __future__ import annotations

import json

import pytest

from robustlab.cli import main


@pytest.mark.parametrize(
    "argv, message",
    [
        (["data", "info", "imagenet"], "unknown dataset 'imagenet'"),
        (["data", "check", "cifar-11", "--data-dir", "."], "unknown dataset 'cifar-11'"),
        (["data", "download", "nope"], "unknown dataset 'nope'"),
        (["data", "check", "--data-dir", "/no/such/dir"], "data directory /no/such/dir does not"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("robustlab: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_env_data_dir_that_does_not_exist(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("ROBUSTLAB_DATA", str(tmp_path / "missing"))
    assert main(["data", "check"]) == 2
    assert "ROBUSTLAB_DATA" in capsys.readouterr().err


def test_info_and_check_of_embedded_dataset(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert main(["data", "info", "mnist-mini", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_classes"] == 10 and info["shape"] == [1, 28, 28] and info["path"]
    assert main(["data", "check", "mnist-mini", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mnist-mini" in out and " ok " in out and "10000" in out and "2000" in out
    assert main(["data"]) == 2  # no action: prints help


def test_check_reports_shared_data(shared_data, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert main(["data", "check", "mnist", "cifar10", "--data-dir", str(shared_data)]) == 0
    out = capsys.readouterr().out
    assert "cifar10        ok          50000   10000" in out
