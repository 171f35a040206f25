"""Image sets of the image chapters: the real CIFAR-10 subset, or scikit-learn's bundled digits.

App. D trains on N = 1000 random CIFAR-10 training images scaled to [-1, 1]. CIFAR-10 is not
bundled with any package and this book never downloads it unasked (see :mod:`support.data.cifar10`),
so the smoke profile uses a stand-in that ships inside an installed package:

**scikit-learn's handwritten digits** (``sklearn.datasets.load_digits``; 1,797 real 8 x 8 scans
with 17 grey levels, ten classes, from the UCI optical-recognition set). We chose them over
matplotlib's sample images because they are hundreds of distinct real images with ten classes,
like CIFAR-10, rather than a handful of photographs that would have to be cut into overlapping
crops (which would make nearest-neighbour memorisation meaningless: neighbouring crops share
pixels). They are upsampled bilinearly to 32 x 32 and repeated over the three colour channels,
so they have CIFAR-10's shape [3, 32, 32] and go through exactly the same code.

The digits chapter uses the same scans at their **native** 8 x 8 resolution with one grey channel
(:func:`load_digits_8x8`): no interpolation, so nearest-neighbour distances are between the
recorded pixels themselves.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from .cifar10 import load_cifar10
from .image_set import IMAGE_SHAPE, ImageSet

ImageSource = Literal["cifar10", "digits", "digits-8x8"]


def random_subset(data: ImageSet, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` distinct images drawn uniformly (App. D: N = 1000 training images): (images in [-1, 1], indices)."""
    if not 1 <= n <= len(data.images):
        raise ValueError(f"need 1 <= n <= {len(data.images)}, got {n}")
    index = torch.randperm(len(data.images), generator=generator)[:n]
    return data.scaled()[index], index


def _digit_scans() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 scans in [0, 1], float [1797, 1, 8, 8] (17 grey levels), and their labels."""
    from sklearn.datasets import load_digits  # bundled in the wheel: no download

    digits = load_digits()
    return torch.from_numpy(digits.images).float()[:, None] / 16.0, torch.from_numpy(digits.target).long()


def _as_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def load_digits_stand_in() -> ImageSet:
    """scikit-learn's 1,797 digits as uint8 [1797, 3, 32, 32] (bilinear 8 -> 32, grey repeated over RGB)."""
    small, labels = _digit_scans()
    large = F.interpolate(small, size=IMAGE_SHAPE[1:], mode="bilinear", align_corners=False)
    return ImageSet(_as_uint8(large).expand(-1, 3, -1, -1).contiguous(), labels, "sklearn.datasets.load_digits")


def load_digits_8x8() -> ImageSet:
    """scikit-learn's 1,797 digits at their native resolution, uint8 [1797, 1, 8, 8] (the 17 grey levels
    0..16 mapped to 0..255 exactly up to rounding)."""
    small, labels = _digit_scans()
    return ImageSet(_as_uint8(small), labels, "sklearn.datasets.load_digits (native 8 x 8)")


def load_images(source: ImageSource, split: Literal["train", "test"] = "train") -> ImageSet:
    """The chapter's image set: ``cifar10`` (local archive, see :mod:`support.data.cifar10`), ``digits``
    (32 x 32 x 3) or ``digits-8x8`` (native).

    The digits have no official split; ``test`` returns the same set (held-out images are drawn
    from what the training subset leaves over, see :func:`held_out`).
    """
    if source == "cifar10":
        return load_cifar10(split=split)
    if source == "digits":
        return load_digits_stand_in()
    if source == "digits-8x8":
        return load_digits_8x8()
    raise ValueError(f"image source must be 'cifar10', 'digits' or 'digits-8x8', got {source!r}")


def held_out_index(n_images: int, train_index: torch.Tensor) -> torch.Tensor:
    """The indices, in increasing order, of the ``n_images`` images that ``train_index`` leaves out."""
    unused = torch.ones(n_images, dtype=torch.bool)
    unused[train_index] = False
    return unused.nonzero().squeeze(1)


def held_out_images(source: ImageSource, data: ImageSet, train_index: torch.Tensor, n: int,
                    generator: torch.Generator) -> torch.Tensor:
    """``n`` real images in [-1, 1] that are not in the training subset (the selection score's reference).

    CIFAR-10: drawn from the official test split. Digits: drawn from the images the subset left out.
    """
    if source == "cifar10":
        pool = load_images("cifar10", "test")
        candidates = torch.arange(len(pool.images))
    else:
        pool = data
        candidates = held_out_index(len(data.images), train_index)
    if n > len(candidates):
        raise ValueError(f"asked for {n} held-out images, only {len(candidates)} available")
    pick = candidates[torch.randperm(len(candidates), generator=generator)[:n]]
    return pool.scaled()[pick]
