"""CIFAR-10 from the official python-pickle archive, read from a local path (Sec. 5.2, App. D).

The archive is ``cifar-10-python.tar.gz`` from https://www.cs.toronto.edu/~kriz/cifar.html. It
holds ``cifar-10-batches-py/data_batch_1`` .. ``data_batch_5`` (50,000 training images) and
``test_batch`` (10,000), each a pickled dict with ``data`` (uint8 [10000, 3072]: the 1,024 red,
then green, then blue values of a 32 x 32 image, row-major) and ``labels``.

Where the data are looked for, in order: the ``root`` argument, ``$CIFAR10_ROOT``, then
``~/.cache/riemannian-memorisation-book/cifar10`` (``$XDG_CACHE_HOME`` honoured). A folder may
hold the archive itself (checked against its published MD5 before use) or the extracted
``cifar-10-batches-py`` folder (checked for shape and labels; the archive's checksum cannot
cover it). Nothing is downloaded unless :func:`download_cifar10` is called (or
``python -m support.data.cifar10 --download``). The pickles are read with a restricted unpickler
that only rebuilds numpy arrays, so a tampered file cannot run code.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import pickle
import tarfile
import urllib.request
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..infra.results import atomic_write
from .image_set import IMAGE_SHAPE, ImageSet

ENV_VAR = "CIFAR10_ROOT"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
N_CLASSES = 10

Split = Literal["train", "test"]


class CIFAR10Missing(FileNotFoundError):
    """No CIFAR-10 archive or extracted folder where the loader looked."""


class CIFAR10Corrupt(ValueError):
    """A CIFAR-10 file failed its checksum or does not have the archive's layout."""


def default_root() -> Path:
    """``$CIFAR10_ROOT`` if set, else the book's folder in the user cache."""
    if os.environ.get(ENV_VAR, "").strip():
        return Path(os.environ[ENV_VAR]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME", "") or Path.home() / ".cache")
    return cache / "riemannian-memorisation-book" / "cifar10"


def md5_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays, nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise CIFAR10Corrupt(f"refusing to unpickle {module}.{name}: a CIFAR-10 batch holds only arrays and lists")
        return super().find_class(module, name)


def _read_batch(raw: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except CIFAR10Corrupt:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise CIFAR10Corrupt(f"{name}: not a readable pickle ({type(error).__name__}: {error}); the file is truncated "
                             "or damaged: extract it again from the official archive") from error
    try:
        data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
    except (KeyError, TypeError, IndexError) as error:
        raise CIFAR10Corrupt(f"{name}: not a CIFAR-10 batch (no 'data' and 'labels')") from error
    # the official batches hold uint8 pixels and integer labels; a cast would wrap 300 to 44 and cut 3.7 to 3
    if data.dtype != np.uint8:
        raise CIFAR10Corrupt(f"{name}: pixels of type {data.dtype}, expected uint8 (0..255) as in the official batches")
    if labels.dtype.kind not in "iu":
        raise CIFAR10Corrupt(f"{name}: labels of type {labels.dtype}, expected integers 0..9")
    if data.ndim != 2 or data.shape[1] != int(np.prod(IMAGE_SHAPE)) or len(labels) != len(data):
        raise CIFAR10Corrupt(f"{name}: data of shape {data.shape} with {len(labels)} labels; expected [N, 3072] and N labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= N_CLASSES):
        raise CIFAR10Corrupt(f"{name}: labels outside 0..9")
    return data.reshape(-1, *IMAGE_SHAPE), labels


def _missing_message(root: Path) -> str:
    return (
        f"CIFAR-10 not found in {root}. Put the official python archive '{ARCHIVE_NAME}' (from {URL}) or its "
        f"extracted '{FOLDER}' folder there, or point ${ENV_VAR} at the folder that holds it. To download it "
        f"(about 163 MB) run:  python -m support.data.cifar10 --download  (or call support.data.cifar10.download_cifar10()). "
        f"Without it, the CIFAR-10 chapter runs its smoke profile on bundled stand-in images."
    )


def load_cifar10(root: str | Path | None = None, split: Split = "train", md5: str = ARCHIVE_MD5) -> ImageSet:
    """Read one split from the archive (verified against ``md5``) or the extracted folder in ``root``.

    Raises :class:`CIFAR10Missing` (with instructions) when neither is there and
    :class:`CIFAR10Corrupt` on a checksum mismatch or a malformed batch.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root).expanduser() if root is not None else default_root()
    names = TRAIN_BATCHES if split == "train" else TEST_BATCHES
    archive, folder = root / ARCHIVE_NAME, root / FOLDER
    if archive.is_file():
        found = md5_of(archive)
        if found != md5:
            raise CIFAR10Corrupt(f"{archive}: MD5 {found}, expected {md5}; the download is incomplete or not the "
                                 f"official archive. Delete it and download again.")
        with tarfile.open(archive, "r:gz") as tar:
            members = {Path(member.name).name: member for member in tar.getmembers()
                       if member.isfile() and Path(member.name).parent.name == FOLDER}
            missing = [name for name in names if name not in members]
            if missing:
                raise CIFAR10Corrupt(f"{archive}: no {', '.join(missing)} inside {FOLDER}/")
            parts = [_read_batch(tar.extractfile(members[name]).read(), name) for name in names]
        source = archive
    elif folder.is_dir():
        missing = [name for name in names if not (folder / name).is_file()]
        if missing:
            raise CIFAR10Missing(f"{folder} lacks {', '.join(missing)}. " + _missing_message(root))
        parts = [_read_batch((folder / name).read_bytes(), name) for name in names]
        source = folder
    else:
        raise CIFAR10Missing(_missing_message(root))
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return ImageSet(images, labels, source)


def download_cifar10(root: str | Path | None = None, url: str = URL, md5: str = ARCHIVE_MD5) -> Path:
    """Download the archive into ``root`` (atomically: a partial download never takes the final name) and verify it."""
    root = Path(root).expanduser() if root is not None else default_root()
    target = root / ARCHIVE_NAME
    if target.is_file() and md5_of(target) == md5:
        return target

    def fetch_and_verify(temporary: Path) -> None:
        urllib.request.urlretrieve(url, temporary)
        found = md5_of(temporary)
        if found != md5:
            raise CIFAR10Corrupt(f"downloaded file has MD5 {found}, expected {md5}")

    atomic_write(target, fetch_and_verify)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description="Locate, verify or download CIFAR-10 for the book.")
    parser.add_argument("--root", default=None, help=f"folder (default: ${ENV_VAR} or {default_root()})")
    parser.add_argument("--download", action="store_true", help="download the archive if it is not there")
    args = parser.parse_args()
    if args.download:
        print(f"archive at {download_cifar10(args.root)}")
    data = load_cifar10(args.root)
    print(f"CIFAR-10 train split: {len(data.images)} images from {data.source}")


if __name__ == "__main__":
    main()
