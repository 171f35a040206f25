"""Matrix-free Lanczos with full re-orthogonalisation (App. D.2, Algorithm 2 step 2).

Given only a Hessian-vector product, k Lanczos steps build an orthonormal basis Q [K, k] of the
Krylov space and a tridiagonal T = Q^T H Q, so that H ~ Q T Q^T. The eigenpairs of T (Ritz
values and, mapped through Q, Ritz vectors) approximate the extreme eigenpairs of H, which is
all the Laplace sampler of App. D.2 needs. Every new Lanczos vector is re-orthogonalised against
all previous ones (classical Gram-Schmidt, applied twice: "twice is enough"), which keeps Q
orthonormal in floating point at the cost of O(K k) memory and O(K k^2) time. H is never formed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm import tqdm

from ..infra.validation import require_positive_int

HVP = Callable[[torch.Tensor], torch.Tensor]


def lanczos(
    hvp: HVP,
    dim: int,
    k: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    breakdown_tol: float = 1e-10,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-step Lanczos on the symmetric operator ``hvp`` of size ``dim``.

    Parameters
    ----------
    hvp:
        v [dim] -> H v [dim]; H must be symmetric (a Hessian).
    k:
        Number of Lanczos iterations (the paper uses k = 1000 for the 3,584 ``conv_in`` parameters).
    generator:
        Draws the random start vector (reproducibility).
    progress:
        Show a progress bar over the iterations.
    breakdown_tol:
        The iteration stops early when the next off-diagonal beta falls below
        ``breakdown_tol * max(|alpha|, |beta|)`` so far: the Krylov space is invariant and its
        Ritz pairs are exact. Fewer than k pairs are then returned (never NaNs).

    Returns
    -------
    eigenvalues:
        [m] Ritz values in descending order, m <= k.
    eigenvectors:
        [dim, m] orthonormal Ritz vectors Q V, columns matching ``eigenvalues``.
    """
    if not 1 <= require_positive_int("k", k) <= require_positive_int("dim", dim):
        raise ValueError(f"need 1 <= k <= dim, got k = {k}, dim = {dim}")
    q = torch.randn(dim, generator=generator, dtype=dtype).to(device)
    q = q / q.norm()
    basis = torch.empty(k, dim, dtype=dtype, device=device)  # rows are Lanczos vectors
    alphas, betas = [], []
    scale = 0.0
    for j in tqdm(range(k), desc="Lanczos", unit="HVP", disable=not progress, leave=False):
        basis[j] = q
        w = hvp(q).to(dtype)
        if w.shape != (dim,):
            raise ValueError(f"hvp must return a vector of shape [{dim}], got {tuple(w.shape)}")
        if not bool(torch.isfinite(w).all()):
            raise FloatingPointError(f"the Hessian-vector product returned non-finite values at Lanczos step {j}")
        alpha = torch.dot(q, w)
        alphas.append(alpha)
        # Full re-orthogonalisation against q_0..q_j, twice.
        for _ in range(2):
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        beta = w.norm()
        scale = max(scale, abs(alpha.item()), beta.item())
        if j == k - 1 or beta <= breakdown_tol * scale:
            break
        betas.append(beta)
        q = w / beta
    m = len(alphas)
    tridiagonal = torch.diag(torch.stack(alphas))
    if m > 1:
        off = torch.stack(betas[: m - 1])
        tridiagonal = tridiagonal + torch.diag(off, 1) + torch.diag(off, -1)
    ritz_values, ritz_coords = torch.linalg.eigh(tridiagonal)
    order = torch.argsort(ritz_values, descending=True)
    return ritz_values[order], basis[:m].T @ ritz_coords[:, order]
