"""The Monge (pullback) metric of the loss manifold and its geodesic equation (Sec. 2.2.1).

The loss manifold is the graph of the loss, h(theta) = (theta, L(theta)) in R^{K+1} (eq 12-13).
Pulling back the Euclidean metric of R^{K+1} through h gives (eq 16-18)

    G(theta) = J_h^T J_h = I_K + grad L grad L^T,

and for this metric the geodesic equation (14) reduces to (eq 19)

    alpha'' = - (alpha'^T H(alpha) alpha') / (1 + ||grad L(alpha)||^2) * grad L(alpha).

Everything here works with K-vectors only: G, its inverse (Sherman-Morrison) and eq (19) are
applied to vectors without ever forming a K x K matrix. ``loss`` is always a function of a flat
parameter tensor of shape [K] returning a scalar, written with torch operations so that
``torch.func`` can differentiate and vmap it.

Eq (19) needs grad L and the single number alpha'^T H alpha', not the vector H alpha'. A loss that
can give those two directly for S curves at once (a :class:`CurvatureLoss`, such as
:class:`support.core.mlp_curvature.MLPRegressionLoss`) is used that way by
:func:`geodesic_acceleration`; any other loss gets a vmapped gradient-plus-HVP pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch
from torch.func import grad, jvp, vjp, vmap

Loss = Callable[[torch.Tensor], torch.Tensor]
HvpMode = Literal["forward", "reverse"]


@runtime_checkable
class CurvatureLoss(Protocol):
    """A loss of theta [K] that also returns eq (19)'s two derivatives for S curves in one pass."""

    def __call__(self, theta: torch.Tensor) -> torch.Tensor: ...

    def gradient_and_curvature(self, theta: torch.Tensor, velocity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(grad L(theta_s) [S, K], v_s^T H(theta_s) v_s [S]) for theta and velocity [S, K]."""
        ...


def metric_vector_product(gradient: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """G v = v + grad L (grad L . v) (eq 18), batched over leading dimensions."""
    return vector + gradient * (gradient * vector).sum(-1, keepdim=True)


def inverse_metric_vector_product(gradient: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """G^{-1} w by Sherman-Morrison: w - grad L (grad L . w) / (1 + ||grad L||^2)."""
    scale = (gradient * vector).sum(-1, keepdim=True) / (1 + gradient.square().sum(-1, keepdim=True))
    return vector - gradient * scale


def metric_norm(gradient: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """||v||_G = sqrt(||v||^2 + (grad L . v)^2) (App. B.2), batched over leading dimensions."""
    return (vector.square().sum(-1) + (gradient * vector).sum(-1).square()).sqrt()


def monge_metric(gradient: torch.Tensor) -> torch.Tensor:
    """The dense K x K matrix G = I + grad L grad L^T (eq 18). For small K and for tests only."""
    if gradient.ndim != 1:
        raise ValueError(f"gradient must have shape [K], got {tuple(gradient.shape)}")
    return torch.eye(gradient.shape[0], dtype=gradient.dtype, device=gradient.device) + torch.outer(gradient, gradient)


@dataclass(frozen=True)
class SummedLoss:
    """L(theta) = sum_j w_j L_j(theta), differentiated part by part to bound memory.

    A batch loss that is a mean over B examples is the weighted sum of the means over
    micro-batches (weights n_j / B), so its gradient and Hessian-vector products are the same
    weighted sums. :func:`gradient_and_hvp` and :func:`support.core.laplace.hessian_vector_product`
    differentiate one part at a time, so peak memory is that of one micro-batch instead of the
    whole batch (on a CPU the App. D.3 batch of 64 images through the full U-Net holds 13 GB for
    a cached reverse-mode HVP and 22.5 GB for a forward-mode one; parts of 16 hold 4-7 GB, and
    there they are also faster, ``benchmarks/cifar_hvp.py``). Calling it evaluates the full sum.
    """

    parts: tuple[Loss, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.parts or len(self.parts) != len(self.weights):
            raise ValueError(f"need one weight per part and at least one part, got {len(self.parts)} parts "
                             f"and {len(self.weights)} weights")

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        return sum(weight * part(theta) for weight, part in zip(self.weights, self.parts))


def loss_gradient(loss: Loss, theta: torch.Tensor) -> torch.Tensor:
    """grad L(theta) for theta of shape [K]; a :class:`SummedLoss` part by part (the memory of one part)."""
    if isinstance(loss, SummedLoss):
        return sum(weight * grad(part)(theta) for weight, part in zip(loss.weights, loss.parts))
    return grad(loss)(theta)


def _gradient_and_hvp(
    loss: Loss, theta: torch.Tensor, vector: torch.Tensor, mode: HvpMode
) -> tuple[torch.Tensor, torch.Tensor]:
    if mode == "forward":
        return jvp(grad(loss), (theta,), (vector,))
    if mode == "reverse":
        gradient, pullback = vjp(grad(loss), theta)
        return gradient, pullback(vector)[0]
    raise ValueError(f"mode must be 'forward' or 'reverse', got {mode!r}")


def gradient_and_hvp(
    loss: Loss, theta: torch.Tensor, vector: torch.Tensor, mode: HvpMode = "forward"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad L(theta), H(theta) v) from ONE differentiation pass, for theta and v of shape [K].

    ``mode="forward"``: forward-over-reverse, ``jvp(grad(L))``; ``mode="reverse"``:
    reverse-over-reverse, ``vjp(grad(L))`` (H is symmetric, so v^T H = (H v)^T). Both give the
    gradient as the primal output of the same pass; which is faster depends on model and device
    (``benchmarks/geodesics.py`` measures both). A :class:`SummedLoss` is differentiated one part
    at a time and the weighted results summed.
    """
    if not isinstance(loss, SummedLoss):
        return _gradient_and_hvp(loss, theta, vector, mode)
    gradient, hv = 0, 0
    for weight, part in zip(loss.weights, loss.parts):
        part_gradient, part_hv = _gradient_and_hvp(part, theta, vector, mode)
        gradient, hv = gradient + weight * part_gradient, hv + weight * part_hv
    return gradient, hv


def _eq19(gradient: torch.Tensor, curvature: torch.Tensor) -> torch.Tensor:
    """Eq (19) from grad L [..., K] and s = alpha'^T H alpha' [...]: -s / (1 + ||grad L||^2) grad L."""
    return -(curvature / (1 + gradient.square().sum(-1)))[..., None] * gradient


def _acceleration(loss: Loss, theta: torch.Tensor, velocity: torch.Tensor, mode: HvpMode) -> torch.Tensor:
    gradient, hv = gradient_and_hvp(loss, theta, velocity, mode)
    return _eq19(gradient, (velocity * hv).sum())


def geodesic_acceleration(
    loss: Loss, theta: torch.Tensor, velocity: torch.Tensor, mode: HvpMode = "forward"
) -> torch.Tensor:
    """alpha'' of eq (19) at position ``theta`` with velocity ``velocity``.

    Shapes: ``theta`` and ``velocity`` both [K] (one curve) or both [S, K] (S curves, computed
    in one pass, no Python loop). A :class:`CurvatureLoss` gives grad L and alpha'^T H alpha'
    itself (``mode`` does not apply); any other loss costs one vmapped gradient-plus-HVP pass
    per curve, forward- or reverse-over-reverse by ``mode``.
    """
    if theta.shape != velocity.shape or theta.ndim not in (1, 2):
        raise ValueError(
            f"theta and velocity must both have shape [K] or [S, K]; got {tuple(theta.shape)} "
            f"and {tuple(velocity.shape)}"
        )
    if theta.ndim == 2 and len(theta) == 0:
        raise ValueError("theta and velocity have no rows (S = 0): pass at least one curve")
    if isinstance(loss, CurvatureLoss):
        rows = (theta, velocity) if theta.ndim == 2 else (theta[None], velocity[None])
        acceleration = _eq19(*loss.gradient_and_curvature(*rows))
        return acceleration if theta.ndim == 2 else acceleration[0]
    if theta.ndim == 1:
        return _acceleration(loss, theta, velocity, mode)
    return vmap(lambda th, ve: _acceleration(loss, th, ve, mode))(theta, velocity)
