"""Lanczos with full re-orthogonalisation against dense eigendecompositions."""

import pytest
import torch

from support.core.lanczos import lanczos

torch.set_default_dtype(torch.float64)


def matrix_with_spectrum(eigenvalues: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=g))
    return q @ torch.diag(eigenvalues) @ q.T, q


def test_extreme_eigenvalues_and_orthonormal_ritz_vectors():
    """A Hessian-like spectrum: a few large eigenvalues and many near zero (cf. Fig. 12)."""
    spectrum = torch.cat([torch.tensor([50.0, 20.0, 8.0, 3.0]), torch.linspace(1e-3, 0.5, 296)])
    h, _ = matrix_with_spectrum(spectrum)
    values, vectors = lanczos(lambda v: h @ v, 300, 60, generator=torch.Generator().manual_seed(1))
    assert values.shape == (60,) and vectors.shape == (300, 60)
    assert torch.allclose(values[:4], torch.tensor([50.0, 20.0, 8.0, 3.0]), rtol=1e-6)
    assert torch.allclose(vectors.T @ vectors, torch.eye(60), atol=1e-10)
    dense_values, dense_vectors = torch.linalg.eigh(h)
    for i in range(4):  # top Ritz vectors match the true eigenvectors up to sign
        assert abs(torch.dot(vectors[:, i], dense_vectors[:, -1 - i]).item()) == pytest.approx(1.0, abs=1e-6)
    assert bool((values[:-1] >= values[1:]).all())


def test_full_run_reproduces_the_whole_spectrum_of_an_indefinite_matrix():
    spectrum = torch.cat([torch.linspace(-5, -0.1, 10), torch.linspace(0.2, 30, 30)])
    h, _ = matrix_with_spectrum(spectrum, seed=3)
    values, vectors = lanczos(lambda v: h @ v, 40, 40, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(values, spectrum.flip(0), atol=1e-9)
    assert torch.allclose(vectors @ torch.diag(values) @ vectors.T, h, atol=1e-8)
    assert (values < 0).sum() == 10


def test_extreme_values_of_an_indefinite_matrix_with_few_steps():
    spectrum = torch.cat([torch.tensor([-40.0]), torch.linspace(-1, 1, 198), torch.tensor([60.0])])
    h, _ = matrix_with_spectrum(spectrum, seed=5)
    values, _ = lanczos(lambda v: h @ v, 200, 30, generator=torch.Generator().manual_seed(0))
    assert values[0].item() == pytest.approx(60.0, rel=1e-6)
    assert values[-1].item() == pytest.approx(-40.0, rel=1e-6)


def test_breakdown_returns_fewer_exact_pairs_not_nans():
    """Only 3 distinct eigenvalues: the Krylov space is invariant after 3 steps."""
    spectrum = torch.tensor([5.0] * 10 + [2.0] * 20 + [-1.0] * 20)
    h, _ = matrix_with_spectrum(spectrum, seed=2)
    values, vectors = lanczos(lambda v: h @ v, 50, 20, generator=torch.Generator().manual_seed(0))
    assert values.shape == (3,) and vectors.shape == (50, 3)
    assert torch.allclose(values, torch.tensor([5.0, 2.0, -1.0]), atol=1e-9)
    assert torch.isfinite(vectors).all()
    assert torch.allclose(h @ vectors, vectors * values, atol=1e-8)  # exact eigenpairs


def test_float32_and_errors():
    spectrum = torch.cat([torch.tensor([10.0, 5.0]), torch.linspace(0, 1, 98)])
    h, _ = matrix_with_spectrum(spectrum)
    h32 = h.float()
    values, vectors = lanczos(lambda v: h32 @ v, 100, 30, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    assert values.dtype == torch.float32 and values[0].item() == pytest.approx(10.0, rel=1e-4)
    assert torch.allclose(vectors.T @ vectors, torch.eye(30, dtype=torch.float32), atol=1e-4)
    with pytest.raises(ValueError, match="k <= dim"):
        lanczos(lambda v: v, 5, 6)
    with pytest.raises(ValueError, match="k must be a positive integer, got 2.5"):  # #21: was a library-internal error
        lanczos(lambda v: v, 5, 2.5)
    with pytest.raises(ValueError, match=r"shape \[5\]"):
        lanczos(lambda v: v[:3], 5, 2)
    with pytest.raises(FloatingPointError, match="non-finite"):
        lanczos(lambda v: v * float("nan"), 5, 2)
