"""The CIFAR-10 loader on tiny archives written in the official python-pickle format."""

import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from support.data import cifar10
from support.data.cifar10 import CIFAR10Corrupt, CIFAR10Missing, load_cifar10, md5_of
from support.data.image_data import random_subset

PER_BATCH = 3


def batch(seed: int, n: int = PER_BATCH) -> dict:
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"batch", b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"img.png"] * n}


def write_archive(root, batches: dict[str, dict]) -> str:
    """cifar-10-python.tar.gz with cifar-10-batches-py/<name> pickles (protocol 2, as the official files)."""
    path = root / cifar10.ARCHIVE_NAME
    with tarfile.open(path, "w:gz") as tar:
        for name, content in batches.items():
            raw = pickle.dumps(content, protocol=2)
            info = tarfile.TarInfo(f"{cifar10.FOLDER}/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return md5_of(path)


@pytest.fixture
def all_batches():
    return {name: batch(i) for i, name in enumerate([*cifar10.TRAIN_BATCHES, *cifar10.TEST_BATCHES])}


def test_reads_both_splits_from_the_archive_in_channel_row_major_order(tmp_path, all_batches):
    md5 = write_archive(tmp_path, all_batches)
    train = load_cifar10(tmp_path, "train", md5=md5)
    test = load_cifar10(tmp_path, "test", md5=md5)
    assert train.images.shape == (5 * PER_BATCH, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (PER_BATCH, 3, 32, 32)
    first = all_batches["data_batch_1"]
    row = first[b"data"][1]  # 1024 red, 1024 green, 1024 blue values, each image row by row
    assert train.images[1, 0, 0, 5] == row[5] and train.images[1, 1, 2, 0] == row[1024 + 64]
    assert train.images[1, 2, 31, 31] == row[3071]
    assert train.labels[:PER_BATCH].tolist() == first[b"labels"]
    assert train.labels[-PER_BATCH:].tolist() == all_batches["data_batch_5"][b"labels"]
    scaled = train.scaled()
    assert scaled.min() >= -1 and scaled.max() <= 1
    assert abs(scaled[1, 0, 0, 5].item() - (int(row[5]) / 127.5 - 1)) < 1e-6


def test_an_archive_with_the_wrong_checksum_is_refused(tmp_path, all_batches):
    write_archive(tmp_path, all_batches)
    with pytest.raises(CIFAR10Corrupt, match="MD5"):
        load_cifar10(tmp_path)  # the official checksum cannot match a home-made archive


def test_the_extracted_folder_is_read_too(tmp_path, all_batches):
    folder = tmp_path / cifar10.FOLDER
    folder.mkdir()
    for name, content in all_batches.items():
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))
    data = load_cifar10(tmp_path, "test")
    assert data.source == folder and torch.equal(data.images.reshape(PER_BATCH, -1),
                                                 torch.from_numpy(all_batches["test_batch"][b"data"]))
    (folder / "data_batch_3").unlink()
    with pytest.raises(CIFAR10Missing, match="data_batch_3"):
        load_cifar10(tmp_path, "train")


def test_missing_data_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv(cifar10.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(CIFAR10Missing) as error:
        load_cifar10()
    message = str(error.value)
    assert str(tmp_path / "nowhere") in message and cifar10.ENV_VAR in message and "--download" in message


def test_the_default_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(cifar10.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cifar10.default_root() == tmp_path / "riemannian-memorisation-book" / "cifar10"
    monkeypatch.setenv(cifar10.ENV_VAR, str(tmp_path / "mine"))
    assert cifar10.default_root() == tmp_path / "mine"


def test_a_pickle_that_would_run_code_is_refused(tmp_path, all_batches):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    all_batches["test_batch"] = {b"data": Exploit(), b"labels": []}
    md5 = write_archive(tmp_path, all_batches)
    with pytest.raises(CIFAR10Corrupt, match="refusing to unpickle"):
        load_cifar10(tmp_path, "test", md5=md5)


def test_malformed_batches_are_refused(tmp_path, all_batches):
    all_batches["test_batch"][b"data"] = all_batches["test_batch"][b"data"][:, :100]
    md5 = write_archive(tmp_path, all_batches)
    with pytest.raises(CIFAR10Corrupt, match="3072"):
        load_cifar10(tmp_path, "test", md5=md5)


def test_random_subset_is_seeded_and_distinct(tmp_path, all_batches):
    md5 = write_archive(tmp_path, all_batches)
    data = load_cifar10(tmp_path, md5=md5)
    images, index = random_subset(data, 7, torch.Generator().manual_seed(0))
    again, index_again = random_subset(data, 7, torch.Generator().manual_seed(0))
    assert torch.equal(images, again) and torch.equal(index, index_again) and len(set(index.tolist())) == 7
    assert torch.equal(images, data.scaled()[index])
    with pytest.raises(ValueError):
        random_subset(data, 0, torch.Generator())


def test_download_verifies_and_never_leaves_a_partial_file(tmp_path, all_batches):
    source = tmp_path / "server"
    source.mkdir()
    md5 = write_archive(source, all_batches)
    url = (source / cifar10.ARCHIVE_NAME).as_uri()
    target = tmp_path / "cache"
    with pytest.raises(CIFAR10Corrupt):
        cifar10.download_cifar10(target, url=url)  # the official checksum does not match
    assert list(target.iterdir()) == []
    path = cifar10.download_cifar10(target, url=url, md5=md5)
    assert path == target / cifar10.ARCHIVE_NAME and md5_of(path) == md5


@pytest.mark.parametrize("field, value, message", [
    (b"data", lambda d: d.astype(np.int64) + 44, "pixels of type int64, expected uint8"),  # 300 would wrap to 44
    (b"data", lambda d: d.astype(np.float32), "pixels of type float32"),
    (b"labels", lambda labels: [v + 0.7 for v in labels], "labels of type float64, expected integers"),
])
def test_an_extracted_batch_of_the_wrong_type_is_refused_not_cast(tmp_path, all_batches, field, value, message):
    """#21: an extracted folder is not checksummed, so its batches' types are checked instead of cast."""
    folder = tmp_path / cifar10.FOLDER
    folder.mkdir()
    all_batches["test_batch"][field] = value(all_batches["test_batch"][field])
    for name, content in all_batches.items():
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(CIFAR10Corrupt, match=message):
        load_cifar10(tmp_path, "test")


@pytest.mark.parametrize("damage", [lambda raw: raw[: len(raw) // 2], lambda raw: b"", lambda raw: b"garbage" * 10])
def test_a_damaged_extracted_batch_names_the_file_and_the_fix(tmp_path, all_batches, damage):
    """#21: a truncated or garbage batch used to raise a bare UnpicklingError or EOFError."""
    folder = tmp_path / cifar10.FOLDER
    folder.mkdir()
    for name, content in all_batches.items():
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))
    (folder / "test_batch").write_bytes(damage((folder / "test_batch").read_bytes()))
    with pytest.raises(CIFAR10Corrupt, match=r"test_batch: not a readable pickle .*extract it again"):
        load_cifar10(tmp_path, "test")
