"""Laplace approximations (support.core.laplace) and posterior ensembles (support.models.ensembles)."""

import pytest
import torch
from torch.func import hessian

from support.core.geodesics import exp_map
from support.core.laplace import (
    LowRankLaplace,
    euclidean_samples,
    exact_hessian,
    exact_laplace,
    hessian_vector_product,
    lanczos_laplace,
    per_batch_laplace,
    positive_part,
    riemannian_samples,
)
from support.core.parameters import parameter_loss, select_parameters
from support.models.ensembles import ensemble_velocity, generate_ensemble
from support.models.flow_matching import VelocityMLP, deterministic_dataset, fixed_batches, flow_matching_loss, generate

torch.set_default_dtype(torch.float64)


def spd_with_spectrum(values, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(values), len(values), generator=g))
    return q @ torch.diag(torch.as_tensor(values)) @ q.T


def test_exact_hessian_and_hvp_match_torch_func_hessian():
    a = spd_with_spectrum([3.0, 1.0, -0.5, 2.0])
    loss = lambda th: 0.5 * th @ a @ th + torch.sin(th).prod()
    theta = torch.randn(4)
    reference = hessian(loss)(theta)
    assert torch.allclose(exact_hessian(loss, theta, chunk=3), reference)
    v = torch.randn(4)
    assert torch.allclose(hessian_vector_product(loss, theta)(v), reference @ v)


def test_positive_part_drops_and_reports_non_positive_pairs():
    values = torch.tensor([4.0, -1.0, 0.5, 0.0, 1e-9])
    vectors = torch.eye(5)
    la = positive_part(values, vectors)
    assert la.eigenvalues.tolist() == [4.0, 0.5, 1e-9] and la.n_dropped == 2
    assert torch.equal(la.eigenvectors, vectors[:, [0, 2, 4]])
    assert positive_part(values, vectors, min_eigenvalue=1e-6).n_dropped == 3
    with pytest.raises(ValueError, match="not a minimum"):
        positive_part(-values.abs(), vectors)
    with pytest.raises(ValueError, match="eigenvectors"):
        positive_part(values, vectors[:, :3])
    with pytest.raises(ValueError, match="prior_precision must be a finite number >= 0"):
        positive_part(values, vectors, prior_precision=-1)


def test_non_finite_and_empty_spectra_and_bad_shapes_are_refused_with_their_cause():
    """#21: a NaN eigenvalue was dropped as 'indefinite', prior_precision=nan gave NaN samples, an empty
    spectrum failed in max(), LowRankLaplace took anything, a NaN Hessian was reported as ill-conditioned."""
    vectors = torch.eye(3)
    with pytest.raises(ValueError, match=r"eigenvalues contains non-finite values \(1 NaN"):
        positive_part(torch.tensor([2.0, float("nan"), 1.0]), vectors)
    with pytest.raises(ValueError, match="prior_precision must be a finite number"):
        positive_part(torch.tensor([2.0, 1.0, 0.5]), vectors, prior_precision=float("nan"))
    with pytest.raises(ValueError, match="min_eigenvalue must be a finite number"):
        positive_part(torch.tensor([2.0, 1.0, 0.5]), vectors, min_eigenvalue=float("nan"))
    with pytest.raises(ValueError, match="empty"):
        positive_part(torch.zeros(0), torch.zeros(3, 0))
    with pytest.raises(ValueError, match="positive"):
        LowRankLaplace(torch.tensor([1.0, -1.0]), torch.eye(2), 0)
    with pytest.raises(ValueError, match="eigenvectors contains non-finite"):
        LowRankLaplace(torch.tensor([1.0]), torch.tensor([[float("inf")]]), 0)
    with pytest.raises(ValueError, match=r"eigenvectors \[K, r\]"):
        LowRankLaplace(torch.tensor([1.0, 2.0]), torch.eye(3), 0)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        LowRankLaplace(torch.tensor([1.0]), torch.eye(1), 0).sample(0)
    with pytest.raises(ValueError, match=r"vector \[K\]"):
        exact_laplace(lambda th: th.square().sum(), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="chunk must be a positive integer"):
        exact_hessian(lambda th: th.square().sum(), torch.zeros(3), chunk=0)
    with pytest.raises(ValueError, match="Hessian at theta has non-finite entries"):
        exact_laplace(lambda th: th.square().sum() * torch.tensor(float("nan")), torch.zeros(3))


@pytest.mark.parametrize("prior", [0.0, 0.5])
def test_sampler_covariance_matches_the_positive_part_inverse(prior):
    h = spd_with_spectrum([5.0, 2.0, 0.5, -1.0, -3.0])
    la = exact_laplace(lambda th: 0.5 * th @ h @ th, torch.zeros(5), prior_precision=prior)
    assert la.rank == 3 and la.n_dropped == 2
    vals, vecs = torch.linalg.eigh(h)
    pos = vals > 0
    expected = vecs[:, pos] @ torch.diag(1 / (vals[pos] + prior)) @ vecs[:, pos].T
    if prior:
        expected = expected + vecs[:, ~pos] @ vecs[:, ~pos].T / prior
    assert torch.allclose(la.covariance(), expected, atol=1e-12)
    v = la.sample(400_000, torch.Generator().manual_seed(0))
    empirical = v.T @ v / len(v)
    assert torch.allclose(empirical, expected, atol=0.02 * expected.abs().max())
    scaled = la.sample(10, torch.Generator().manual_seed(1), scale=0.5)
    assert torch.allclose(scaled, 0.5 * la.sample(10, torch.Generator().manual_seed(1)))


def test_leading_restricts_to_the_top_eigenpairs():
    h = spd_with_spectrum([5.0, 2.0, 0.5, -1.0, -3.0])
    la = exact_laplace(lambda th: 0.5 * th @ h @ th, torch.zeros(5))
    top = la.leading(1)
    u = la.eigenvectors[:, :1]
    assert top.rank == 1 and top.n_dropped == la.n_dropped + 2
    assert torch.allclose(top.covariance(), u @ u.T / 5.0, atol=1e-12)
    v = top.sample(1000, torch.Generator().manual_seed(0))
    assert torch.allclose(v - (v @ u) @ u.T, torch.zeros_like(v), atol=1e-12)  # every sample lies along u_1
    for r in (0, 4):
        with pytest.raises(ValueError, match="r must lie"):
            la.leading(r)
    with pytest.raises(ValueError, match="prior"):
        exact_laplace(lambda th: 0.5 * th @ h @ th, torch.zeros(5), prior_precision=1.0).leading(1)


def test_lanczos_laplace_matches_exact_top_pairs():
    h = spd_with_spectrum(torch.cat([torch.tensor([40.0, 10.0, 3.0]), torch.linspace(-0.1, 0.1, 57)]), seed=1)
    loss = lambda th: 0.5 * th @ h @ th
    exact = exact_laplace(loss, torch.zeros(60))
    approx = lanczos_laplace(loss, torch.zeros(60), k=25, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(approx.eigenvalues[:3], exact.eigenvalues[:3], rtol=1e-8)
    overlap = (approx.eigenvectors[:, :3] * exact.eigenvectors[:, :3]).sum(0).abs()
    assert torch.allclose(overlap, torch.ones(3), atol=1e-6)


def test_euclidean_and_riemannian_samples():
    h = spd_with_spectrum([4.0, 1.0])
    loss = lambda th: 0.5 * th @ h @ th + 0.1 * th[0] ** 4
    theta = torch.zeros(2)
    v = exact_laplace(loss, theta).sample(5, torch.Generator().manual_seed(0))
    assert torch.equal(euclidean_samples(theta, v), theta + v)
    sol = riemannian_samples(loss, theta, v)
    assert bool(sol.converged.all())
    assert torch.allclose(sol.endpoint, exp_map(loss, theta, v))
    assert bool((sol.endpoint.norm(dim=1) <= v.norm(dim=1) + 1e-12).all())


@pytest.fixture
def small_model():
    torch.manual_seed(0)
    return VelocityMLP(1, (6, 5))


def load(model, layout, theta):
    clone = VelocityMLP(1, (6, 5))
    clone.load_state_dict(model.state_dict())
    params = dict(clone.named_parameters())
    with torch.no_grad():
        for name, part in layout.unflatten(theta).items():
            params[name].copy_(part)
    return clone


def test_ensemble_velocity_and_generation_match_a_loop_over_models(small_model):
    layout = select_parameters(small_model, ["net.0", "net.4"])
    base, _, _ = parameter_loss(small_model, lambda f: torch.zeros(()), names=["net.0", "net.4"])
    thetas = base + 0.3 * torch.randn(4, layout.dim, generator=torch.Generator().manual_seed(2))
    x, t = torch.randn(7, 1), torch.rand(7)
    fields = ensemble_velocity(small_model, layout, thetas, x, t)
    x0 = torch.randn(9, 1)
    samples = generate_ensemble(small_model, layout, thetas, x0, method="euler", steps=20)
    assert fields.shape == (4, 7, 1) and samples.shape == (4, 9, 1)
    for s in range(4):
        clone = load(small_model, layout, thetas[s])
        with torch.no_grad():
            assert torch.allclose(fields[s], clone(x, t))
        assert torch.allclose(samples[s], generate(clone, x0, method="euler", steps=20))
    path = generate_ensemble(small_model, layout, thetas, x0, method="euler", times=torch.linspace(0, 1, 5))
    assert path.shape == (5, 4, 9, 1) and torch.allclose(path[-1], samples, atol=1e-2)
    grouped = generate_ensemble(small_model, layout, thetas, x0, particles_per_solve=20, method="euler", steps=20)
    assert torch.allclose(grouped, samples)  # two models per solve, same numbers
    with pytest.raises(ValueError, match="thetas"):
        generate_ensemble(small_model, layout, thetas[:, :3], x0)
    with pytest.raises(ValueError, match="particles_per_solve"):
        generate_ensemble(small_model, layout, thetas, x0, particles_per_solve=0)


def test_subset_laplace_on_a_flow_loss_is_symmetric_and_consistent(small_model):
    data = deterministic_dataset(torch.tensor([[-1.5], [1.5]]), 64, torch.Generator().manual_seed(0))
    theta, loss, _ = parameter_loss(small_model, lambda f: flow_matching_loss(f, data), names=["net.4"])
    h = exact_hessian(loss, theta)
    assert torch.allclose(h, h.T)
    # the output layer enters linearly, so the loss is exactly quadratic in it: H v = grad(theta+v) - grad(theta)
    v = torch.randn(theta.numel())
    g = torch.func.grad(loss)
    assert torch.allclose(h @ v, g(theta + v) - g(theta), atol=1e-10)


def test_per_batch_loss_manifolds_of_algorithm_2(small_model):
    train = torch.linspace(-2, 2, 10)[:, None]
    batches = fixed_batches(train, 4, 3, torch.Generator().manual_seed(0))
    again = fixed_batches(train, 4, 3, torch.Generator().manual_seed(0))
    assert len(batches) == 3 and all(len(b) == 4 for b in batches)
    assert all(torch.equal(a.x0, b.x0) and torch.equal(a.t, b.t) for a, b in zip(batches, again))
    assert all(len(set(b.x1.flatten().tolist())) == 4 for b in batches)  # no repeated data in a batch
    assert bool(((batches[0].t >= 0) & (batches[0].t <= 1)).all())
    names = ["net.4"]
    losses = [parameter_loss(small_model, lambda f, b=b: flow_matching_loss(f, b), names=names)[1] for b in batches]
    theta = parameter_loss(small_model, lambda f: torch.zeros(()), names=names)[0]
    approximations = per_batch_laplace(losses, theta, k=5, generator=torch.Generator().manual_seed(0))
    assert len(approximations) == 3
    tops = [a.eigenvalues[0].item() for a in approximations]
    exact_tops = [torch.linalg.eigvalsh(exact_hessian(loss, theta))[-1].item() for loss in losses]
    assert tops == pytest.approx(exact_tops, rel=1e-8)
    assert len(set(round(t, 6) for t in tops)) == 3  # each batch has its own manifold
    assert len(fixed_batches(train[:2], 5, 1)[0]) == 5  # small training set: drawn with replacement
    with pytest.raises(ValueError):
        fixed_batches(train, 0, 1)
