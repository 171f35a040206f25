"""Training the MAP denoiser theta* of Sec. 5.2 / App. D.1, with atomic checkpoints and resume.

App. D.1: Adam at learning rate 2e-4 on the DDPM objective (1000-step schedule) for up to 5000
epochs over N = 1000 images, a checkpoint every 50 epochs, and the checkpoint with the best FID
as theta*. Here:

* **Checkpoints** go to ``folder/latest.pt`` (weights, optimiser, RNG state, history) every
  ``checkpoint_every`` epochs and at the end, written atomically (temporary file, then rename),
  so an interrupted run leaves the previous checkpoint intact and resumes from it. The selected
  weights go to ``folder/best.pt``. Only these two files are kept (100 full checkpoints of the
  35.7 M-parameter model would take 14 GB); the history records every checkpoint's score.
  A fingerprint of what determines the training trajectory (the plan's batch size, learning
  rate, checkpoint interval and precision; the images; the architecture, ``unet.config``; the
  initial weights) keeps a checkpoint from being resumed by a different run (it is then ignored
  and overwritten, with a warning). The epoch count is where the trajectory stops, not what it
  is, and ``compile`` changes how a step is computed, not what: a run whose ``epochs`` grew
  resumes from its checkpoint and continues as one uninterrupted run would.
* **Selection** calls ``score(unet)`` at every checkpoint; lower is better (FID, or the book's
  pixel-feature Fréchet fallback, :mod:`support.evaluation.frechet`). Without ``score`` the last one wins.
  ``diagnostics(unet)``, if given, returns further numbers to record in every checkpoint's
  history row without selecting by them (the digits chapter records memorisation and quality
  there and keeps the last checkpoint, the minimum of the training loss).
* **Speed on a GPU**: bf16 autocast (``mixed_precision``) and ``torch.compile`` (``compile``)
  apply on any device when the plan asks for them (the paper profile asks on CUDA only; the
  tests run both on a CPU); TF32 matrix products are switched on for CUDA training only and
  restored afterwards, so the Hessian computations stay in full fp32.
* A progress bar shows epoch, loss and images per second.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel
from tqdm import tqdm

from ..infra.results import atomic_torch_save, load_checkpoint
from .cifar_unet import ddpm_loss, draw_fixed_batch

Score = Callable[[UNet2DModel], float]
Diagnostics = Callable[[UNet2DModel], Mapping[str, float]]
RUN_INPUTS = "training plan, images, architecture or initial weights"


@dataclass(frozen=True)
class TrainingPlan:
    """Hyper-parameters of the MAP training (App. D.1)."""

    epochs: int
    batch_size: int
    learning_rate: float
    checkpoint_every: int
    mixed_precision: bool = False
    """bf16 autocast of the training forward pass."""
    compile: bool = False
    """``torch.compile`` the training forward pass (and, through AOT autograd, its backward)."""

    def __post_init__(self) -> None:
        if min(self.epochs, self.batch_size, self.checkpoint_every) < 1 or not 0 < self.learning_rate < math.inf:
            raise ValueError(f"epochs, batch_size, checkpoint_every and learning_rate must be positive (and finite): {self}")


@dataclass
class TrainingRecord:
    """What training did: one history row per checkpoint, and the selected checkpoint."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = float("inf")
    resumed_from: int = 0
    """Epoch the run resumed from (0: trained from scratch in this call)."""

    @property
    def epochs_done(self) -> int:
        return int(self.history[-1]["epoch"]) if self.history else 0


TRAJECTORY_INDEPENDENT = ("epochs", "compile")
"""Plan fields left out of the checkpoint fingerprint: changing them keeps the trajectory so far."""


def _fingerprint(plan: TrainingPlan, images: torch.Tensor, unet: UNet2DModel) -> str:
    trajectory = {key: value for key, value in asdict(plan).items() if key not in TRAJECTORY_INDEPENDENT}
    digest = hashlib.sha256(repr(sorted(trajectory.items())).encode())
    # the architecture (e.g. the number of attention heads: no weight shows it), without diffusers' private
    # entries: `_use_default_values` lists names in set order, which changes with every interpreter's hash seed
    config = sorted((key, value) for key, value in unet.config.items() if not key.startswith("_"))
    digest.update(repr(config).encode())
    digest.update(images.detach().cpu().float().numpy().tobytes())
    for name, tensor in sorted(unet.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()[:16]


@contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def train_ddpm(
    unet: UNet2DModel,
    images: torch.Tensor,
    scheduler: DDPMScheduler,
    plan: TrainingPlan,
    folder: str | Path,
    generator: torch.Generator,
    score: Score | None = None,
    progress: bool = True,
    diagnostics: Diagnostics | None = None,
) -> TrainingRecord:
    """Train ``unet`` (in place) on ``images`` [N, C, H, W] in [-1, 1]; resume from ``folder`` if possible.

    On return ``unet`` holds the selected checkpoint's weights. Batches, noise and timesteps are
    drawn from ``generator`` (on the CPU), whose state is checkpointed, so a resumed run continues
    with the same random numbers as an uninterrupted one.
    """
    if images.ndim != 4 or len(images) < 1:
        raise ValueError(f"images must have shape [N, C, H, W], got {tuple(images.shape)}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images contain NaN or inf: they would train the U-Net to NaN weights; check the image source")
    if images.min() < -1 or images.max() > 1:
        raise ValueError("images must be scaled to [-1, 1]")
    folder = Path(folder)
    device = next(unet.parameters()).device
    images = images.to(device)
    cuda = device.type == "cuda"
    fingerprint = _fingerprint(plan, images, unet)
    optimiser = torch.optim.Adam(unet.parameters(), lr=plan.learning_rate)
    record = TrainingRecord()
    state = load_checkpoint(folder / "latest.pt", fingerprint, RUN_INPUTS, device,
                            required=("epoch", "model", "optimiser", "generator", "history", "best_epoch", "best_score"))
    if state is not None:
        unet.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        generator.set_state(state["generator"].cpu())  # the checkpoint was mapped to the model's device
        record = TrainingRecord(state["history"], state["best_epoch"], state["best_score"], state["epoch"])
        if record.epochs_done > plan.epochs:
            raise ValueError(f"{folder / 'latest.pt'} has trained {record.epochs_done} epochs, more than "
                             f"plan.epochs = {plan.epochs}; ask for at least {record.epochs_done} epochs to use it, "
                             f"or train into another folder")

    model = torch.compile(unet) if plan.compile else unet
    n = len(images)
    bar = tqdm(range(record.epochs_done, plan.epochs), desc="training", unit="epoch", disable=not progress,
               initial=record.epochs_done, total=plan.epochs)
    seen, seconds, losses = 0, 0.0, []
    with _tf32(cuda):
        for epoch in bar:
            unet.train()
            start = time.perf_counter()
            for index in torch.randperm(n, generator=generator).split(plan.batch_size):
                batch = draw_fixed_batch(images[index.to(device)], scheduler, generator)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=plan.mixed_precision):
                    loss = ddpm_loss(model, batch, scheduler)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                losses.append(loss.detach())
            if cuda:
                torch.cuda.synchronize()
            seconds += time.perf_counter() - start
            seen += n
            bar.set_postfix(loss=f"{losses[-1].item():.4f}", img_per_s=f"{seen / seconds:.0f}")
            done = epoch + 1
            if done % plan.checkpoint_every == 0 or done == plan.epochs:
                unet.eval()
                row = {"epoch": done, "loss": torch.stack(losses).float().mean().item(), "images_per_second": seen / seconds}
                if not math.isfinite(row["loss"]):  # before saving: the last finite checkpoint stays the latest
                    raise FloatingPointError(f"the training loss became {row['loss']} by epoch {done}; lower the "
                                             f"learning rate ({plan.learning_rate}); {folder / 'latest.pt'} keeps the "
                                             f"last checkpoint with a finite loss")
                if diagnostics is not None:
                    row.update({key: float(value) for key, value in diagnostics(unet).items()})
                if score is not None:
                    row["score"] = float(score(unet))
                    if not math.isfinite(row["score"]):
                        raise ValueError(f"the selection score is {row['score']} at epoch {done}; a score must be "
                                         f"finite to compare checkpoints (check the score function)")
                record.history.append(row)
                value = row.get("score", -float(done))  # without a score the latest checkpoint wins
                if value <= record.best_score:
                    record.best_epoch, record.best_score = done, value
                    atomic_torch_save({"fingerprint": fingerprint, "epoch": done, "model": unet.state_dict()},
                                      folder / "best.pt")
                atomic_torch_save(
                    {"fingerprint": fingerprint, "epoch": done, "model": unet.state_dict(),
                     "optimiser": optimiser.state_dict(), "generator": generator.get_state(),
                     "history": record.history, "best_epoch": record.best_epoch, "best_score": record.best_score},
                    folder / "latest.pt",
                )
                seen, seconds, losses = 0, 0.0, []
    bar.close()
    best = load_checkpoint(folder / "best.pt", fingerprint, RUN_INPUTS, device, required=("epoch", "model"))
    if best is None:
        raise FileNotFoundError(f"{folder / 'best.pt'} is missing or from another run; delete {folder} and retrain")
    unet.load_state_dict(best["model"])
    unet.eval()
    return record
