"""Dataset readers: the real shared files (counts, means, checksums), corruption and truncation
detection, and files written by the tests in each official format that has no real copy here."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from robustlab.data import dataset_info, load_split, locate_dataset, resolve_data_root
from robustlab.data.checksum import is_verified
from robustlab.data.embedded_data import load_mnist_mini
from robustlab.errors import DataError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(autouse=True, scope="module")
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """Keep verification stamps out of the user's cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        mp.delenv("ROBUSTLAB_DATA", raising=False)
        yield


# ----------------------------------------------------------------------------- real data


@pytest.mark.parametrize(
    "name, train_counts, test_counts, mean",
    [
        ("mnist", MNIST_TRAIN_COUNTS, MNIST_TEST_COUNTS, (0.1307,)),
        ("fashion-mnist", [6000] * 10, [1000] * 10, (0.2860,)),
        ("cifar10", [5000] * 10, [1000] * 10, (0.4914, 0.4822, 0.4465)),
    ],
)
def test_shared_dataset_counts_and_means(shared_data, name, train_counts, test_counts, mean):
    info = dataset_info(name)
    train = load_split(name, "train", shared_data, verify=True)
    test = load_split(name, "test", shared_data)
    for split, counts in ((train, train_counts), (test, test_counts)):
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert tuple(split.images.shape[1:]) == info.shape
        assert split.class_counts().tolist() == counts
    assert train.channel_mean().tolist() == pytest.approx(mean, abs=5e-5)
    assert info.mean == pytest.approx(mean)
    if name == "cifar10":
        assert test.channel_mean().tolist() == pytest.approx((0.4942, 0.4851, 0.4504), abs=5e-5)
        # first training image of the official release is a frog (class 6)
        assert int(train.labels[0]) == 6 and train.info.classes[6] == "frog"


def test_verification_is_cached_per_file(shared_data):
    path = shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz"
    load_split("mnist", "test", shared_data, verify=True)
    assert is_verified(path, "27ae3e4e09519cfbb04c329615203637")
    assert not is_verified(path, "0" * 32)


def test_mnist_files_accepted_directly(shared_data, monkeypatch):
    direct = load_split("mnist", "test", shared_data / "mnist")
    assert len(direct) == 10000
    monkeypatch.setenv("ROBUSTLAB_DATA", str(shared_data))
    assert locate_dataset("mnist") == shared_data / "mnist"
    assert torch.equal(load_split("mnist", "test").labels, direct.labels)


def test_mnist_mini_is_a_balanced_slice_of_mnist(shared_data):
    for split, per_class in (("train", 1000), ("test", 200)):
        mini = load_split("mnist-mini", split)
        assert mini.class_counts().tolist() == [per_class] * 10
        full = load_split("mnist", split, shared_data)
        with np.load(Path(__file__).parents[1] / "robustlab/data/embedded/mnist_mini.npz") as z:
            src = torch.from_numpy(z[f"{split}_source_index"].astype(np.int64))
        assert torch.equal(full.images[src], mini.images)
        assert torch.equal(full.labels[src], mini.labels)


# ----------------------------------------------------------------------------- corruption


def _copy_cifar_test(shared_data: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    dst = folder / "test_batch.bin"
    shutil.copyfile(shared_data / "cifar-10-batches-bin" / "test_batch.bin", dst)
    return dst


def test_flipped_byte_fails_checksum(shared_data, tmp_path):
    path = _copy_cifar_test(shared_data, tmp_path)
    data = bytearray(path.read_bytes())
    data[123_457] ^= 0x01  # one pixel bit: the file still parses
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"test_batch\.bin: checksum mismatch"):
        load_split("cifar10", "test", tmp_path)
    assert len(load_split("cifar10", "test", tmp_path, verify=False)) == 10000


def test_changed_label_inside_gzip_fails_content_checksum(shared_data, tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    shutil.copy(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz", folder)
    labels = bytearray(
        gzip.decompress((shared_data / "mnist/t10k-labels-idx1-ubyte.gz").read_bytes())
    )
    labels[100] = (labels[100] + 1) % 10
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(labels)))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: checksum mismatch"):
        load_split("mnist", "test", tmp_path)


def test_truncated_files_are_named(shared_data, tmp_path):
    path = _copy_cifar_test(shared_data, tmp_path)
    with open(path, "r+b") as f:
        f.truncate(30_730_000 - 100)
    with pytest.raises(DataError, match=r"test_batch\.bin: truncated"):
        load_split("cifar10", "test", tmp_path)

    folder = tmp_path / "mnist"
    folder.mkdir()
    for base in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        raw = gzip.decompress((shared_data / "mnist" / f"{base}.gz").read_bytes())
        (folder / base).write_bytes(raw)  # uncompressed IDX is accepted too
    assert len(load_split("mnist", "test", tmp_path)) == 10000
    images = folder / "t10k-images-idx3-ubyte"
    full = images.read_bytes()
    images.write_bytes(full[:-784])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: IDX file truncated"):
        load_split("mnist", "test", tmp_path)
    images.write_bytes(full)

    gz = folder / "t10k-labels-idx1-ubyte.gz"
    gz.write_bytes((shared_data / "mnist/t10k-labels-idx1-ubyte.gz").read_bytes()[:2000])
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: truncated gzip"):
        load_split("mnist", "test", tmp_path, verify=False)


def test_missing_dataset_and_missing_root(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"dataset 'cifar10' not found under .*robustlab data"):
        load_split("cifar10", "train", tmp_path)
    with pytest.raises(DataError, match=r"data directory .*nope does not exist"):
        load_split("mnist", "train", tmp_path / "nope")
    monkeypatch.setenv("ROBUSTLAB_DATA", str(tmp_path / "gone"))
    with pytest.raises(DataError, match=r"ROBUSTLAB_DATA .*gone does not exist"):
        resolve_data_root()
    with pytest.raises(DataError, match="unknown dataset 'imagenet'"):
        load_split("imagenet")
    with pytest.raises(DataError, match="not 'valid'"):
        load_split("mnist-mini", "valid")


def test_mnist_mini_checksum(tmp_path, monkeypatch):
    import robustlab.data.embedded_data as emb

    bad = tmp_path / "mnist_mini.npz"
    data = bytearray(emb.MNIST_MINI_PATH.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(emb, "MNIST_MINI_PATH", bad)
    with pytest.raises(DataError, match="mnist_mini.npz: checksum mismatch"):
        load_mnist_mini("train")


# ----------------------------------------------------------------------------- synthetic formats


def _rng_images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _write_cifar_pickle(path: Path, obj: dict) -> None:
    # Like the official release: a protocol-2 pickle of a dict with bytes keys.
    path.write_bytes(pickle.dumps({k.encode(): v for k, v in obj.items()}, protocol=2))


def test_cifar10_python_pickles(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    imgs, labels = [], []
    for i, name in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        x = _rng_images(4, (3072,), i)
        y = [(i + j) % 10 for j in range(4)]
        _write_cifar_pickle(folder / name, {"batch_label": b"b", "labels": y, "data": x})
        imgs.append(x)
        labels.append(y)
    train = load_split("cifar10", "train", tmp_path, verify=False)
    assert train.images.shape == (20, 3, 32, 32)
    assert np.array_equal(train.images.numpy().reshape(20, -1), np.concatenate(imgs[:5]))
    assert train.labels.tolist() == sum(labels[:5], [])
    # channel order: the first 1024 values are the red plane
    assert np.array_equal(train.images[0, 0].numpy().ravel(), imgs[0][0, :1024])
    with pytest.raises(DataError, match="data_batch_1: checksum mismatch"):
        load_split("cifar10", "train", tmp_path)


def test_cifar100_python_pickle_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for i, split in enumerate(("train", "test")):
        x = _rng_images(6, (3072,), 10 + i)
        _write_cifar_pickle(
            folder / split,
            {"data": x, "fine_labels": [99, 0, 5, 42, 7, 1], "coarse_labels": [19, 0, 1, 2, 3, 4]},
        )
    names = [f"class{k}".encode() for k in range(100)]
    _write_cifar_pickle(folder / "meta", {"fine_label_names": names, "coarse_label_names": []})
    test = load_split("cifar100", "test", tmp_path, verify=False)
    assert test.labels.tolist() == [99, 0, 5, 42, 7, 1]
    assert test.info.num_classes == 100 and test.info.classes[42] == "class42"
    assert np.array_equal(test.images.numpy().reshape(6, -1), x)


def test_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "test").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(DataError, match="not allowed in a dataset file"):
        load_split("cifar100", "test", tmp_path, verify=False)


def test_svhn_mat(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    folder = tmp_path / "svhn"
    folder.mkdir()
    x = _rng_images(5, (32, 32, 3), 3).transpose(1, 2, 3, 0)  # (32, 32, 3, N) as in the release
    y = np.array([[10], [1], [9], [10], [5]], dtype=np.uint8)
    for split in ("train", "test"):
        scipy_io.savemat(str(folder / f"{split}_32x32.mat"), {"X": x, "y": y})
    test = load_split("svhn", "test", tmp_path, verify=False)
    assert test.labels.tolist() == [0, 1, 9, 0, 5]
    assert test.images.shape == (5, 3, 32, 32)
    assert np.array_equal(test.images[2].numpy(), x[:, :, :, 2].transpose(2, 0, 1))
    with pytest.raises(DataError, match="test_32x32.mat: checksum mismatch"):
        load_split("svhn", "test", tmp_path)
    (folder / "train_32x32.mat").write_bytes((folder / "test_32x32.mat").read_bytes()[:300])
    with pytest.raises(DataError, match="train_32x32.mat: truncated or corrupt"):
        load_split("svhn", "train", tmp_path, verify=False)


def test_tiny_imagenet_folder(tmp_path, monkeypatch):
    from robustlab.data import datasets

    image = pytest.importorskip("PIL.Image")
    folder = tmp_path / "tiny-imagenet-200"
    wnids = [f"n{k:08d}" for k in range(200)]
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (folder / "words.txt").write_text(f"{wnids[1]}\tgoldfish, Carassius auratus\n")
    colors = {}
    for k in (0, 1, 199):  # a few classes with images; the others are empty folders
        img_dir = folder / "train" / wnids[k] / "images"
        img_dir.mkdir(parents=True)
        for j in range(2):
            color = (k % 256, 40 * j + 20, 200)
            colors[(k, j)] = color
            image.new("RGB", (64, 64), color).save(img_dir / f"{wnids[k]}_{j}.JPEG")
    for k in range(200):
        (folder / "train" / wnids[k] / "images").mkdir(parents=True, exist_ok=True)
    image.new("L", (64, 64), 128).save(folder / "val" / "images" / "val_0.JPEG")  # grayscale
    image.new("RGB", (64, 64), (250, 10, 10)).save(folder / "val" / "images" / "val_1.JPEG")
    (folder / "val" / "val_annotations.txt").write_text(
        f"val_0.JPEG\t{wnids[5]}\t0\t0\t63\t63\nval_1.JPEG\t{wnids[199]}\t1\t2\t60\t61\n"
    )
    train = load_split("tiny-imagenet", "train", tmp_path)
    assert train.images.shape == (6, 3, 64, 64)
    assert train.labels.tolist() == [0, 0, 1, 1, 199, 199]
    assert train.info.classes[1] == "goldfish" and train.info.classes[0] == wnids[0]
    mean_color = train.images.double().mean(dim=(2, 3))
    expected = torch.tensor([colors[(k, j)] for k in (0, 1, 199) for j in range(2)]).double()
    assert torch.allclose(mean_color, expected, atol=3)
    val = load_split("tiny-imagenet", "test", tmp_path)
    assert val.labels.tolist() == [5, 199]
    assert val.images[0].double().mean().item() == pytest.approx(128, abs=2)
    # decoded splits are cached (keyed by file names, sizes, mtimes) when large enough
    monkeypatch.setattr(datasets, "TINY_CACHE_MIN_IMAGES", 1)
    first = load_split("tiny-imagenet", "train", tmp_path)
    cached = list((Path(os.environ["XDG_CACHE_HOME"]) / "robustlab" / "decoded").glob("*.npy"))
    assert len(cached) == 1
    monkeypatch.setattr(datasets, "read_tiny_imagenet", None)  # a decode would now fail
    assert torch.equal(load_split("tiny-imagenet", "train", tmp_path).images, first.images)
    monkeypatch.undo()
    (folder / "val" / "images" / "val_1.JPEG").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DataError, match="val_1.JPEG: truncated or corrupt JPEG"):
        load_split("tiny-imagenet", "val", tmp_path)
