"""A small digit classifier whose features replace Inception's for 8 x 8 digits (the digits chapter).

FID compares Gaussian fits of Inception-v3 features; for 8 x 8 grey digits Inception is neither
installable here nor meaningful, so the digits chapter trains its own feature network, on held-out
digits only (never on the generator's training images, so its features cannot favour copies):

    conv 3x3 (1 -> 16), ReLU, conv 3x3 (16 -> 32), ReLU, 2 x 2 max-pool, linear 512 -> 64, ReLU, linear 64 -> 10.

:meth:`DigitClassifier.features` is the 64-dimensional penultimate layer (the Frechet distance's
feature space, :mod:`support.evaluation.frechet`); :meth:`DigitClassifier.predict` its labels, which
the chapter's "concept novelty" compares with the label of a sample's nearest training image.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

FEATURES = 64
CLASSES = 10


class DigitClassifier(nn.Module):
    """Two convolutions and two linear layers on [N, 1, 8, 8] images in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 4 * 4, FEATURES), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURES, CLASSES)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The penultimate layer [N, 64] (the Frechet-distance features)."""
        if images.ndim != 4 or images.shape[1:] != (1, 8, 8):
            raise ValueError(f"images must have shape [N, 1, 8, 8], got {tuple(images.shape)}")
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The most likely label of each image [N]."""
        return self.eval()(images).argmax(dim=1)

    @torch.no_grad()
    def accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Share of ``images`` whose predicted label is ``labels``."""
        return (self.predict(images) == labels).float().mean().item()


def train_classifier(
    images: torch.Tensor, labels: torch.Tensor, epochs: int, generator: torch.Generator, seed: int,
    batch_size: int = 64, learning_rate: float = 1e-3, progress: bool = True,
) -> DigitClassifier:
    """Adam on the cross-entropy of ``images`` [N, 1, 8, 8] and ``labels`` [N]; weights initialised from
    ``seed`` (the global RNG is restored afterwards), batches drawn from ``generator``."""
    if len(images) != len(labels) or len(images) < batch_size:
        raise ValueError(f"need as many labels as images and at least one batch of {batch_size}; "
                         f"got {len(images)} images, {len(labels)} labels")
    if epochs < 1:
        raise ValueError(f"epochs must be positive, got {epochs}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("the classifier's training images contain NaN or inf")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitClassifier().to(images.device, images.dtype)
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    model.train()
    for _ in tqdm(range(epochs), desc="classifier", unit="epoch", disable=not progress):
        for index in torch.randperm(len(images), generator=generator).split(batch_size):
            index = index.to(images.device)
            loss = nn.functional.cross_entropy(model(images[index]), labels[index])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return model.eval()
