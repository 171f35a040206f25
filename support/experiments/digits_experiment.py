"""The digits chapter: chapter 12's experiment on native 8 x 8 scans, and what its samples are worth.

The stages shared with the CIFAR-10 experiment (fixed-batch loss manifolds, Lanczos, posterior
perturbations, DDIM generation) come from :mod:`support.experiments.cifar_experiment` and
:mod:`support.models`; this module adds what the paper does not measure:

* :func:`split_digits`: N training digits; the rest held out and split in two halves, one to train
  the feature classifier (:mod:`support.models.digit_classifier`), one as the reference sample of
  the target distribution (Frechet distances, the classifier's test accuracy).
* :class:`SampleJudge`: for a set of generated images, the App. D.4 memorisation ratio, the Frechet
  distance to the reference digits in classifier features and in pixels, the "concept novelty"
  (share of images whose predicted label differs from the label of their nearest training image),
  and the same nearest-neighbour measures after one-step denoising (does a perturbed image only
  add unstructured noise to a training image?).
* :func:`over_batches`: a measure per Hessian batch, as mean and standard error over the B batches
  (Fig. 13's error bars).
* :func:`quality_at_equal_memorisation`: the quality of two methods compared at the same
  memorisation, by interpolating each method's (memorisation, quality) curve over eta.
* :func:`image_diversity`: the Fig. 6 "sink": how different the images of distinct base samples are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..data.image_data import held_out_index, random_subset
from ..data.image_set import ImageSet
from ..evaluation.divergences import RepeatedEstimate
from ..evaluation.frechet import frechet_distance
from ..evaluation.memorisation import Neighbours, memorised_from, nearest_neighbours
from ..models.digit_classifier import DigitClassifier
from .cifar_experiment import MEMORISATION_C, MEMORISATION_NEIGHBOURS


@dataclass(frozen=True)
class DigitSplit:
    """Training digits and the two halves of the held-out digits, images in [-1, 1] with labels."""

    train: torch.Tensor
    train_labels: torch.Tensor
    classifier: torch.Tensor
    """Held-out digits the feature classifier is trained on."""
    classifier_labels: torch.Tensor
    reference: torch.Tensor
    """Held-out digits neither model has seen: the target sample of the Frechet distances."""
    reference_labels: torch.Tensor


def split_digits(data: ImageSet, n_train: int, generator: torch.Generator) -> DigitSplit:
    """``n_train`` random training digits (App. D.1's random subset); the others, shuffled, split in half."""
    train, index = random_subset(data, n_train, generator)
    rest = held_out_index(len(data.images), index)
    rest = rest[torch.randperm(len(rest), generator=generator)]
    if len(rest) < 4:
        raise ValueError(f"n_train = {n_train} leaves {len(rest)} of {len(data.images)} images held out; "
                         "the classifier and the reference need at least two each")
    half = len(rest) // 2
    images, labels = data.scaled(), data.labels
    return DigitSplit(train, labels[index], images[rest[:half]], labels[rest[:half]],
                      images[rest[half:]], labels[rest[half:]])


@dataclass(frozen=True)
class SampleQuality:
    """What one set of generated images is worth (lower Frechet distances are better)."""

    memorisation: float
    """App. D.4 ratio (c = 1/3, K = 10) against the training digits."""
    feature_fd: float
    """Frechet distance to the reference digits in the classifier's 64 features."""
    pixel_fd: float
    """Frechet distance to the reference digits in the 64 pixels."""
    novelty: float
    """Share of images whose predicted label differs from the label of their nearest training digit."""
    nearest_distance: float
    """Median L2 distance of an image to its nearest training digit."""
    denoised_nearest_distance: float
    """The same after one-step Tweedie denoising with the MAP model."""
    denoised_memorisation: float
    """The memorisation ratio after that denoising."""
    restored_memorisation: float
    """denoised_memorisation - memorisation: how much of the memorisation the perturbation only hid under noise."""

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _memorised_share(found: Neighbours) -> float:
    """Share of images memorised at App. D.4's c = 1/3 (eq 8) from their neighbour distances."""
    return memorised_from(found.d1, found.d_ref, MEMORISATION_C).double().mean().item()


class SampleJudge:
    """Scores generated digits against one :class:`DigitSplit` with a trained classifier and a denoiser."""

    def __init__(self, split: DigitSplit, classifier: DigitClassifier,
                 denoise: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Everything is compared on the classifier's device (the split's tensors are moved there)."""
        self.classifier, self.denoise = classifier, denoise
        device = next(classifier.parameters()).device
        self.train, self.train_labels = split.train.to(device), split.train_labels.to(device)
        self.reference = split.reference.to(device)
        with torch.no_grad():
            self.reference_features = classifier.features(self.reference)
        self.flat_train = self.train.flatten(1).double()

    def neighbours(self, images: torch.Tensor) -> Neighbours:
        """The nearest training digits of every image [M, 1, 8, 8], with App. D.4's K = 10 reference distances."""
        return nearest_neighbours(images.flatten(1).double(), self.flat_train, MEMORISATION_NEIGHBOURS)

    def nearest(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(L2 distance to the nearest training digit, its index) for every image [M, 1, 8, 8]."""
        found = self.neighbours(images)
        return found.d1.sqrt(), found.index

    def memorisation(self, images: torch.Tensor) -> float:
        """App. D.4's memorisation ratio (c = 1/3, K = 10), as ``cifar_experiment.memorisation_of``."""
        return _memorised_share(self.neighbours(images))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> SampleQuality:
        if images.ndim != 4 or len(images) < 2:
            raise ValueError(f"need at least two images [M, 1, 8, 8], got {tuple(images.shape)}")
        if not bool(torch.isfinite(images).all()):
            raise ValueError("generated images contain NaN or inf: filter the diverged models first")
        found = self.neighbours(images)  # one distance matrix serves the memorisation and the nearest digits
        denoised = self.neighbours(self.denoise(images))
        predicted = self.classifier.predict(images)
        memorisation, denoised_memorisation = _memorised_share(found), _memorised_share(denoised)
        return SampleQuality(
            memorisation=memorisation,
            feature_fd=frechet_distance(self.classifier.features(images), self.reference_features),
            pixel_fd=frechet_distance(images.flatten(1), self.reference.flatten(1)),
            novelty=(predicted != self.train_labels[found.index]).double().mean().item(),
            nearest_distance=found.d1.sqrt().median().item(),
            denoised_nearest_distance=denoised.d1.sqrt().median().item(),
            denoised_memorisation=denoised_memorisation,
            restored_memorisation=denoised_memorisation - memorisation,
        )


def over_batches(qualities: Sequence[SampleQuality]) -> dict[str, RepeatedEstimate]:
    """Each measure of :class:`SampleQuality` over the Hessian batches: mean and standard error over B."""
    if len(qualities) < 2:
        raise ValueError(f"a standard error over batches needs at least two batches, got {len(qualities)}")
    names = qualities[0].as_dict()
    return {name: RepeatedEstimate(np.array([q.as_dict()[name] for q in qualities])) for name in names}


def quality_at_equal_memorisation(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]], points: int = 5,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Quality of each method at common memorisation levels.

    ``curves[method] = (memorisation, quality)`` over the method's eta (or sigma) grid. Each curve is
    read as quality as a piecewise-linear function of memorisation (points sorted by memorisation);
    returns ``points`` levels spread over the range every curve covers, and each method's quality
    there. Raises if the curves' memorisation ranges do not overlap (no level to compare at).
    """
    if len(curves) < 2:
        raise ValueError("need at least two methods to compare")
    low = max(min(m) for m, _ in curves.values())
    high = min(max(m) for m, _ in curves.values())
    if not low < high:
        raise ValueError(f"the methods' memorisation ranges do not overlap (common range [{low:.3f}, {high:.3f}]): "
                         "widen the eta grids")
    levels = np.linspace(low, high, points)
    out = {}
    for method, (memorisation, quality) in curves.items():
        order = np.argsort(memorisation)
        out[method] = np.interp(levels, np.asarray(memorisation)[order], np.asarray(quality)[order])
    return levels, out


def image_diversity(images: torch.Tensor) -> float:
    """Mean L2 distance between the images [M, C, H, W] of distinct base samples (0: all collapsed to one)."""
    if len(images) < 2:
        raise ValueError("diversity needs at least two images")
    flat = images.flatten(1).double()
    distances = torch.cdist(flat, flat)
    m = len(flat)
    return (distances.sum() / (m * (m - 1))).item()


def distinct_nearest(judge: SampleJudge, images: torch.Tensor) -> int:
    """How many distinct training digits are the nearest ones of ``images`` (1: a sink)."""
    return int(judge.nearest(images)[1].unique().numel())
