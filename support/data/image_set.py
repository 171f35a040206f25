"""The container every image source returns: uint8 images [N, C, H, W], labels and provenance.

All loaders (:mod:`support.data.cifar10`, and the digits in :mod:`support.data.image_data`: the
32 x 32 x 3 stand-in of the CIFAR-10 chapter and the native 8 x 8 scans) build an :class:`ImageSet`; keeping it in a module of its own lets the dispatcher import the
CIFAR-10 loader without the loader importing the dispatcher back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

IMAGE_SHAPE = (3, 32, 32)
"""CIFAR-10's image shape (C, H, W), which the CIFAR-10 chapter's stand-in images share."""


@dataclass(frozen=True)
class ImageSet:
    """Images uint8 [N, C, H, W] and labels int64 [N], with where they came from."""

    images: torch.Tensor
    labels: torch.Tensor
    source: Path | str

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"need one label per image, got {tuple(self.labels.shape)} for {len(self.images)} images")

    def scaled(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The images in [-1, 1], as the DDPM of App. D is trained on."""
        return self.images.to(dtype) / 127.5 - 1.0
