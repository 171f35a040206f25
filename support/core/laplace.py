"""Laplace approximations at the trained weights (Sec. 2.2, Algorithm 1, App. D.2).

q(theta) = N(theta*, H^-1) with H the Hessian of the (Gibbs) posterior loss at theta*. A Hessian
of a network is indefinite, so App. D.2 keeps only its positive eigenpairs:

    v = U_+ Lambda_+^{-1/2} U_+^T eps,   eps ~ N(0, I_K),   U_+ = Q V_+,

which has covariance H_+^{-1} = U_+ Lambda_+^{-1} U_+^T on the span of U_+ and nothing outside it.
Since U_+ has orthonormal columns, U_+^T eps ~ N(0, I_r); we draw that r-vector directly.

Two choices the paper leaves implicit are explicit parameters here (see the Laplace chapter):

* ``prior_precision`` delta >= 0: the posterior loss L + delta/2 ||theta||^2 (a Gaussian prior
  instead of the paper's uniform prior, delta = 0). Its Hessian is H + delta I, so the kept
  eigenvalues become lambda + delta and, for delta > 0, the directions outside span(U_+) get
  variance 1/delta.
* ``min_eigenvalue``: eigenpairs with lambda <= min_eigenvalue are dropped (App. D.2 uses 0).
  Tiny positive eigenvalues give variances 1/lambda that can be astronomically large.

Euclidean samples are theta* + eta v; Riemannian samples Exp_{theta*}(eta v) (Alg. 1 step 3).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.func import grad, vjp, vmap

from ..infra.validation import require_finite, require_non_negative, require_positive_int, require_tensor
from .geodesics import GeodesicSolution, solve_geodesics
from .lanczos import lanczos
from .monge_metric import HvpMode, Loss, SummedLoss, gradient_and_hvp


@dataclass(frozen=True)
class LowRankLaplace:
    """A Laplace approximation N(0, H_+^{-1}) for the velocity v (Alg. 1 step 3, App. D.2)."""

    eigenvalues: torch.Tensor
    """[r] kept (positive) eigenvalues of H, descending."""
    eigenvectors: torch.Tensor
    """[K, r] orthonormal eigenvectors (Ritz vectors Q V_+ for Lanczos)."""
    n_dropped: int
    """Eigenpairs dropped because lambda <= min_eigenvalue (the indefinite part of H)."""
    prior_precision: float = 0.0

    def __post_init__(self) -> None:
        require_tensor("eigenvalues", self.eigenvalues)
        require_tensor("eigenvectors", self.eigenvectors)
        if self.eigenvalues.ndim != 1 or self.eigenvectors.ndim != 2 or self.eigenvectors.shape[1:] != self.eigenvalues.shape:
            raise ValueError(f"need eigenvalues [r] and eigenvectors [K, r]; got {tuple(self.eigenvalues.shape)}, "
                             f"{tuple(self.eigenvectors.shape)}")
        require_finite("eigenvalues", self.eigenvalues)
        require_finite("eigenvectors", self.eigenvectors)
        require_non_negative("prior_precision", self.prior_precision)
        if not bool((self.eigenvalues > 0).all()):
            raise ValueError(f"every kept eigenvalue must be positive (variance 1 / lambda), got minimum "
                             f"{float(self.eigenvalues.min()):.3g}: build the approximation with positive_part()")
        if isinstance(self.n_dropped, bool) or not isinstance(self.n_dropped, int) or self.n_dropped < 0:
            raise ValueError(f"n_dropped must be a non-negative integer, got {self.n_dropped!r}")

    @property
    def dim(self) -> int:
        return self.eigenvectors.shape[0]

    @property
    def rank(self) -> int:
        return self.eigenvalues.shape[0]

    def sample(self, n: int, generator: torch.Generator | None = None, scale: float = 1.0) -> torch.Tensor:
        """n velocities v ~ N(0, scale^2 Sigma) of shape [n, K] (``scale`` is the paper's eta / t)."""
        require_positive_int("n", n)
        require_non_negative("scale", scale)
        dtype, device = self.eigenvectors.dtype, self.eigenvectors.device
        z = torch.randn(n, self.rank, generator=generator, dtype=dtype).to(device)
        v = (z * (self.eigenvalues + self.prior_precision).rsqrt()) @ self.eigenvectors.T
        if self.prior_precision > 0:
            eps = torch.randn(n, self.dim, generator=generator, dtype=dtype).to(device)
            outside = eps - (eps @ self.eigenvectors) @ self.eigenvectors.T
            v = v + outside / self.prior_precision**0.5
        return scale * v

    def leading(self, r: int) -> LowRankLaplace:
        """The approximation restricted to the ``r`` largest eigenpairs (App. C.2 uses r = 1: v along
        the Hessian's top eigenvector, v = z u_1 / sqrt(lambda_1), z ~ N(0, 1))."""
        if not 1 <= r <= self.rank:
            raise ValueError(f"r must lie in [1, {self.rank}], got {r}")
        if self.prior_precision > 0:
            raise ValueError("leading() keeps v inside the span of the top eigenvectors, which a Gaussian prior "
                             "(prior_precision > 0) would leave; restrict before adding a prior")
        return LowRankLaplace(self.eigenvalues[:r], self.eigenvectors[:, :r], self.n_dropped + self.rank - r)

    def covariance(self) -> torch.Tensor:
        """The dense K x K covariance (small K and tests only)."""
        u = self.eigenvectors
        cov = (u / (self.eigenvalues + self.prior_precision)) @ u.T
        if self.prior_precision > 0:
            cov = cov + (torch.eye(self.dim, dtype=u.dtype, device=u.device) - u @ u.T) / self.prior_precision
        return cov


def positive_part(
    eigenvalues: torch.Tensor,
    eigenvectors: torch.Tensor,
    min_eigenvalue: float = 0.0,
    prior_precision: float = 0.0,
) -> LowRankLaplace:
    """Keep the eigenpairs with eigenvalue > ``min_eigenvalue`` (App. D.2) and count the dropped ones.

    Raises if nothing is left (the Hessian has no positive curvature: not a minimum), and on a
    non-finite eigenvalue (which "> min_eigenvalue" would silently drop as indefinite).
    """
    if eigenvalues.ndim != 1 or eigenvectors.ndim != 2 or eigenvectors.shape[1:] != eigenvalues.shape:
        raise ValueError(
            f"need eigenvalues [r] and eigenvectors [K, r]; got {tuple(eigenvalues.shape)}, {tuple(eigenvectors.shape)}"
        )
    if len(eigenvalues) == 0:
        raise ValueError("the spectrum is empty: pass at least one eigenpair")
    require_finite("eigenvalues", eigenvalues)
    require_non_negative("prior_precision", prior_precision)
    require_non_negative("min_eigenvalue", min_eigenvalue)
    keep = eigenvalues > min_eigenvalue
    if not bool(keep.any()):
        raise ValueError(
            f"no eigenvalue above {min_eigenvalue} (largest {eigenvalues.max().item():.3g}): the Hessian has no "
            "positive curvature here, so theta is not a minimum and the Laplace approximation is undefined"
        )
    order = torch.argsort(eigenvalues[keep], descending=True)
    return LowRankLaplace(
        eigenvalues=eigenvalues[keep][order],
        eigenvectors=eigenvectors[:, keep][:, order],
        n_dropped=int((~keep).sum()),
        prior_precision=prior_precision,
    )


def exact_hessian(loss: Loss, theta: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """The dense K x K Hessian of ``loss`` at ``theta`` (small and moderate K).

    Columns are Hessian-vector products against the unit vectors, vmapped in chunks of ``chunk``
    through one reverse-over-reverse pullback (2.7x faster than ``torch.func.hessian`` for the
    1,185-parameter flow network on CPU: 17 s vs 46 s).
    """
    require_positive_int("chunk", chunk)
    _, pullback = vjp(grad(loss), theta)
    eye = torch.eye(theta.numel(), dtype=theta.dtype, device=theta.device)
    h = torch.cat([vmap(pullback)(block)[0] for block in eye.split(chunk)])
    return 0.5 * (h + h.T)  # symmetrise rounding


def hessian_vector_product(loss: Loss, theta: torch.Tensor, mode: HvpMode = "forward") -> Callable[[torch.Tensor], torch.Tensor]:
    """v -> H(theta) v without forming H.

    ``mode="forward"``: forward-over-reverse, ``jvp(grad(L))``, one forward-and-backward pass per
    product. ``mode="reverse"``: the gradient's graph is built once, ``vjp(grad(L))``, and every
    product is one more backward pass through it (H is symmetric, so v^T H = (H v)^T). For a
    fixed theta with many products (Lanczos) the reverse mode skips the repeated forward pass at
    the price of keeping the graph in memory. A :class:`~support.core.monge_metric.SummedLoss` keeps
    no graph: every product differentiates its parts one at a time (the memory of one part).
    """
    if mode not in ("forward", "reverse"):
        raise ValueError(f"mode must be 'forward' or 'reverse', got {mode!r}")
    if mode == "forward" or isinstance(loss, SummedLoss):  # nothing to cache, or one part's graph at a time
        return lambda v: gradient_and_hvp(loss, theta, v, mode)[1]
    _, pullback = vjp(grad(loss), theta)
    return lambda v: pullback(v)[0]


def exact_laplace(loss: Loss, theta: torch.Tensor, min_eigenvalue: float = 0.0, prior_precision: float = 0.0) -> LowRankLaplace:
    """Laplace approximation from the exact Hessian (eigendecomposition, then the positive part)."""
    if require_tensor("theta", theta).ndim != 1 or not theta.is_floating_point():
        raise ValueError(f"theta must be a floating-point vector [K], got {theta.dtype} of shape {tuple(theta.shape)} "
                         "(flatten the parameters with support.core.parameters)")
    hessian = exact_hessian(loss, require_finite("theta", theta))
    if not bool(torch.isfinite(hessian).all()):
        raise ValueError("the Hessian at theta has non-finite entries: the loss or its second derivatives are not "
                         "finite there (check the loss at theta; a NaN loss gives a NaN Hessian)")
    values, vectors = torch.linalg.eigh(hessian)
    return positive_part(values, vectors, min_eigenvalue, prior_precision)


def lanczos_laplace(
    loss: Loss,
    theta: torch.Tensor,
    k: int,
    generator: torch.Generator | None = None,
    min_eigenvalue: float = 0.0,
    prior_precision: float = 0.0,
    hvp: HvpMode = "forward",
    progress: bool = False,
) -> LowRankLaplace:
    """Laplace approximation from k Lanczos steps on the Hessian (App. D.2, Algorithm 2 steps 2)."""
    values, vectors = lanczos(
        hessian_vector_product(loss, theta, hvp), theta.numel(), k, generator=generator, dtype=theta.dtype,
        device=theta.device, progress=progress,
    )
    return positive_part(values, vectors, min_eigenvalue, prior_precision)


def euclidean_samples(theta_star: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """theta_E = theta* + v for every row of v [S, K] (Sec. 2.2)."""
    return theta_star + v


def riemannian_samples(loss: Loss, theta_star: torch.Tensor, v: torch.Tensor, **solver_options) -> GeodesicSolution:
    """theta_R = Exp_{theta*}(v) for every row of v, with per-sample convergence flags (Alg. 1 step 3)."""
    return solve_geodesics(loss, theta_star, v, **solver_options)


def per_batch_laplace(
    batch_losses: Sequence[Loss],
    theta: torch.Tensor,
    k: int,
    generator: torch.Generator | None = None,
    min_eigenvalue: float = 0.0,
    prior_precision: float = 0.0,
    hvp: HvpMode = "forward",
    progress: bool = False,
) -> list[LowRankLaplace]:
    """Algorithm 2, steps 2 for b = 1..B: one Lanczos Laplace approximation per batch loss manifold.

    ``batch_losses[b]`` is the deterministic loss L^(b)(theta) of batch b (fixed data, noise and
    times, App. D.3). Returns one approximation per batch; their spectra are Fig. 12.
    """
    return [lanczos_laplace(loss, theta, k, generator, min_eigenvalue, prior_precision, hvp, progress) for loss in batch_losses]
