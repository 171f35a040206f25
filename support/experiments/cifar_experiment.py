"""The stages of the CIFAR-10 experiment after training (Sec. 5.2; App. D.2-D.4; Algorithm 2).

* :func:`draw_hessian_batches` fixes B batches of the training images with their noise and
  timesteps (App. D.3: the stochasticity comes from the batching only).
* :func:`perturb_along_directions` follows one eigenvector of the batch Hessian both straight
  (theta* + t v) and along the geodesic alpha(t) of the loss manifold (Figs. 6 and 7), with the
  loss, the curvature v^T H v along both paths and the geodesic's metric speed (constant along a
  geodesic, so a check of the solve).
* :func:`posterior_perturbations` draws S velocities v ~ N(0, H_+^-1) and returns, for every
  scale eta, the Euclidean weights theta* + eta v and the Riemannian weights Exp(eta v) (Fig. 13).
  Geodesics are reparametrisation invariant, Exp(eta v) = alpha_v(eta), so one solve per v
  gives every eta. A curve whose solve exceeds the evaluation budget is filtered (App. D.3.1).
* :func:`metric_reach` is Theorem 4.2's ratio ||Exp(eta v) - theta*|| / ||eta v||_G(theta*), at most 1.
* :func:`image_change` measures how far perturbed models move the images of fixed base samples
  from the MAP's (Fig. 6), with a standard error over the base samples.
* :func:`memorisation_of` is the App. D.4 measure: c = 1/3, K = 10 next-closest training images.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler
from torch.func import vmap

from ..core.geodesics import solve_geodesics
from ..core.laplace import LowRankLaplace
from ..core.monge_metric import HvpMode, Loss, gradient_and_hvp, metric_norm
from ..evaluation.divergences import RepeatedEstimate
from ..evaluation.memorisation import memorisation_ratio
from ..models.cifar_unet import FixedBatch, draw_fixed_batch

MEMORISATION_C = 1 / 3
MEMORISATION_NEIGHBOURS = 10


def draw_hessian_batches(
    images: torch.Tensor, n_batches: int, batch_size: int, scheduler: DDPMScheduler, generator: torch.Generator
) -> list[FixedBatch]:
    """B disjoint batches of ``batch_size`` training images, each with fixed noise and timesteps (App. D.3)."""
    if n_batches * batch_size > len(images):
        raise ValueError(f"{n_batches} disjoint batches of {batch_size} need {n_batches * batch_size} images, "
                         f"got {len(images)}")
    order = torch.randperm(len(images), generator=generator)
    return [draw_fixed_batch(images[index.to(images.device)], scheduler, generator)
            for index in order[: n_batches * batch_size].split(batch_size)]


@dataclass(frozen=True)
class DirectionPaths:
    """Straight and geodesic paths from theta* along fixed velocities (Figs. 6, 7)."""

    times: torch.Tensor
    """[T] times t, starting at 0."""
    velocities: torch.Tensor
    """[D, K] initial velocities (one per direction)."""
    straight: torch.Tensor
    """[T, D, K] theta* + t v."""
    geodesic: torch.Tensor
    """[T, D, K] alpha(t) (NaN where the solve exceeded its budget)."""
    geodesic_velocity: torch.Tensor
    """[T, D, K] alpha'(t) (NaN likewise)."""
    converged: torch.Tensor
    """[D] whether each geodesic met its tolerance within the budget."""
    straight_loss: torch.Tensor
    """[T, D] batch loss along theta* + t v."""
    geodesic_loss: torch.Tensor
    """[T, D] batch loss along alpha(t)."""
    straight_curvature: torch.Tensor
    """[T, D] v^T H v at theta* + t v: the second derivative of the loss along the straight path."""
    geodesic_curvature: torch.Tensor
    """[T, D] alpha'^T H alpha' at alpha(t); eq (19) bends the geodesic downhill (along -grad L)
    where it is positive and uphill where it is negative."""
    geodesic_metric_speed: torch.Tensor
    """[T, D] ||alpha'(t)||_G = sqrt(||alpha'||^2 + (grad L . alpha')^2) (App. B.2), constant along a geodesic."""
    seconds: float


def losses_along(loss: Loss, thetas: torch.Tensor) -> torch.Tensor:
    """The loss at every parameter vector of ``thetas`` [..., K] (NaN rows give NaN)."""
    flat = thetas.reshape(-1, thetas.shape[-1])
    with torch.no_grad():
        values = [loss(theta) if bool(torch.isfinite(theta).all()) else theta.new_tensor(float("nan")) for theta in flat]
    return torch.stack(values).reshape(thetas.shape[:-1])


def slope_and_curvature(
    loss: Loss, thetas: torch.Tensor, velocities: torch.Tensor, hvp: HvpMode = "forward", chunk_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad L . v, v^T H v) at every row pair of ``thetas`` and ``velocities`` [..., K].

    The first and second derivative of the loss along the line theta + s v at s = 0, from one
    gradient-and-HVP pass per row, vmapped over ``chunk_size`` rows at a time (the memory of that
    many HVPs).
    """
    if thetas.shape != velocities.shape:
        raise ValueError(f"thetas and velocities must have the same shape, got {tuple(thetas.shape)} "
                         f"and {tuple(velocities.shape)}")

    def one(theta: torch.Tensor, velocity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gradient, hv = gradient_and_hvp(loss, theta, velocity, hvp)
        return (gradient * velocity).sum(), (velocity * hv).sum()

    flat_thetas, flat_velocities = thetas.reshape(-1, thetas.shape[-1]), velocities.reshape(-1, thetas.shape[-1])
    size = chunk_size or len(flat_thetas)
    parts = [vmap(one)(t, v) for t, v in zip(flat_thetas.split(size), flat_velocities.split(size))]
    slope, curvature = (torch.cat([part[i] for part in parts]).reshape(thetas.shape[:-1]) for i in range(2))
    return slope, curvature


def perturb_along_directions(
    loss: Loss, theta: torch.Tensor, velocities: torch.Tensor, times: torch.Tensor, hvp: HvpMode = "forward",
    chunk_size: int | None = None, **solver: object
) -> DirectionPaths:
    """theta* + t v and the geodesic alpha_v(t) of eq (19) for every row v of ``velocities``, with
    the loss and the curvature along both and the geodesic's metric speed (``hvp`` and
    ``chunk_size`` serve the solve and these diagnostics alike)."""
    start = time.perf_counter()
    solution = solve_geodesics(loss, theta, velocities, times=times, hvp=hvp, chunk_size=chunk_size, **solver)
    seconds = time.perf_counter() - start
    times = solution.times
    straight = theta + times[:, None, None] * velocities[None]
    _, straight_curvature = slope_and_curvature(loss, straight, velocities.expand_as(straight), hvp, chunk_size)
    slope, geodesic_curvature = slope_and_curvature(loss, solution.position, solution.velocity, hvp, chunk_size)
    metric_speed = (solution.velocity.square().sum(-1) + slope.square()).sqrt()
    return DirectionPaths(times, velocities, straight, solution.position, solution.velocity, solution.converged,
                          losses_along(loss, straight), losses_along(loss, solution.position),
                          straight_curvature, geodesic_curvature, metric_speed, seconds)


def eigen_velocities(laplace: LowRankLaplace, length: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Velocities of Euclidean length ``length`` along the top and the bottom kept eigenvector (Fig. 6).

    Both have the same length, so the images differ only through the direction: along the top
    eigenvector the loss curves most, along the bottom (smallest positive eigenvalue) least.
    """
    if length <= 0:
        raise ValueError(f"length must be positive, got {length}")
    top, bottom = laplace.eigenvectors[:, 0], laplace.eigenvectors[:, -1]
    eigen = {"top": laplace.eigenvalues[0].item(), "bottom": laplace.eigenvalues[-1].item()}
    return length * torch.stack([top, bottom]), eigen


@dataclass(frozen=True)
class PosteriorPerturbations:
    """S Laplace velocities and their Euclidean and Riemannian weights at every scale eta (Fig. 13)."""

    etas: tuple[float, ...]
    v: torch.Tensor
    """[S, K] v ~ N(0, H_+^-1) (eta = 1)."""
    euclidean: torch.Tensor
    """[E, S, K] theta* + eta v."""
    riemannian: torch.Tensor
    """[E, S, K] Exp_theta*(eta v) = alpha_v(eta); rows of filtered curves are NaN."""
    converged: torch.Tensor
    """[S] geodesics solved within the budget (the others are filtered, App. D.3.1)."""
    nfe: torch.Tensor
    """[S] right-hand-side evaluations used per converged geodesic."""
    seconds: float

    @property
    def filtered(self) -> int:
        return int((~self.converged).sum())

    def metric_reach(self, theta: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        """[E, S_kept] Theorem 4.2's ratio :func:`metric_reach` for every converged geodesic and eta."""
        kept = self.converged.to(self.riemannian.device)
        return metric_reach(theta, self.euclidean[:, kept] - theta, self.riemannian[:, kept], gradient)


def posterior_perturbations(
    loss: Loss,
    theta: torch.Tensor,
    laplace: LowRankLaplace,
    etas: tuple[float, ...],
    samples: int,
    generator: torch.Generator,
    **solver: object,
) -> PosteriorPerturbations:
    """Algorithm 2, step 3 for one batch: S velocities, Euclidean and Riemannian weights at every eta."""
    if not etas or any(b <= a for a, b in zip(etas, etas[1:])) or etas[0] <= 0:
        raise ValueError(f"etas must be positive and strictly increasing, got {etas}")
    v = laplace.sample(samples, generator)
    times = torch.tensor((0.0, *etas), dtype=theta.dtype)
    start = time.perf_counter()
    solution = solve_geodesics(loss, theta, v, times=times, **solver)
    seconds = time.perf_counter() - start
    scales = times[1:, None, None].to(theta.device)
    return PosteriorPerturbations(tuple(etas), v, theta + scales * v[None], solution.position[1:],
                                  solution.converged, solution.nfe, seconds)


def metric_reach(theta: torch.Tensor, step: torch.Tensor, endpoint: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """||Exp_theta(u) - theta|| / ||u||_G(theta) for the steps u = eta v and geodesic endpoints [..., K].

    Theorem 4.2 (App. B.2): the geodesic with initial velocity u keeps its metric speed
    ||u||_G(theta) = sqrt(||u||^2 + (grad L . u)^2) for unit time, and G >= I, so its endpoint is
    within that distance of theta: the ratio is at most 1 up to the solver's tolerance. The paper
    writes the bound as ||u||, which assumes grad L(theta) = 0; a per-batch loss with fixed noise
    (App. D.3) is not stationary at the trained theta*, and there ||u|| can be exceeded.

    Raises
    ------
    ValueError
        If the shapes differ or an input is not finite (select the converged geodesics first).
    """
    if step.shape != endpoint.shape or theta.shape != step.shape[-1:] or gradient.shape != theta.shape:
        raise ValueError(f"need theta and gradient [K] and steps and endpoints [..., K] of one shape, got theta "
                         f"{tuple(theta.shape)}, gradient {tuple(gradient.shape)}, steps {tuple(step.shape)}, "
                         f"endpoints {tuple(endpoint.shape)}")
    for name, tensor in (("theta", theta), ("gradient", gradient), ("steps", step), ("endpoints", endpoint)):
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{name} is not finite: pass the converged geodesics only (filtered rows are NaN)")
    return (endpoint - theta).norm(dim=-1) / metric_norm(gradient, step)


def image_change(images: torch.Tensor, reference: torch.Tensor) -> RepeatedEstimate:
    """L2 distance of every image [M, C, H, W] to the reference image of the same base sample (Fig. 6).

    Row i of both comes from the same x0, the reference through the MAP; the mean over the M base
    samples, with its standard error, says how much a perturbation changes what the model makes.
    Subtracting the ``values`` of two perturbations gives their paired difference.
    """
    if images.shape != reference.shape or len(images) < 2:
        raise ValueError(f"need images and reference of one shape [M >= 2, ...], got {tuple(images.shape)} "
                         f"and {tuple(reference.shape)}")
    distances = (images - reference).flatten(1).double().norm(dim=1)
    if not bool(torch.isfinite(distances).all()):
        raise ValueError("an image is not finite: the perturbed model generated NaN or inf")
    return RepeatedEstimate(distances.cpu().numpy())


def memorisation_of(images: torch.Tensor, train: torch.Tensor) -> float:
    """App. D.4: share of ``images`` [..., 3, H, W] memorised at c = 1/3 w.r.t. K = 10 next-closest training images."""
    generated = images.reshape(-1, train[0].numel()).double()
    return memorisation_ratio(generated, train.flatten(1).double(), MEMORISATION_C, MEMORISATION_NEIGHBOURS).item()
