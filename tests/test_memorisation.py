"""Memorisation ratio (Def. 2.1, eq 7-8; App. D.4) against brute force and closed forms."""

import pytest
import torch

from support.evaluation import memorisation
from support.evaluation.memorisation import is_memorised, memorisation_ratio, memorised_interval, neighbour_distances

torch.set_default_dtype(torch.float64)


def brute_force(generated, train, c, k=1):
    flags = []
    for x in generated:
        d = sorted(((x - y) ** 2).sum().item() for y in train)
        flags.append(d[0] <= c * sum(d[1 : k + 1]) / k)
    return sum(flags) / len(flags)


@pytest.mark.parametrize("k", [1, 3])
def test_ratio_matches_brute_force_for_scalar_and_vector_c(k):
    g = torch.Generator().manual_seed(0)
    train = torch.randn(12, 3, generator=g)
    generated = torch.cat([train[:6] + 0.05 * torch.randn(6, 3, generator=g), torch.randn(30, 3, generator=g)])
    cs = torch.tensor([0.01, 0.1, 1 / 3, 0.5, 0.9])
    vector = memorisation_ratio(generated, train, cs, neighbours=k)
    assert vector.shape == (5,)
    for c, value in zip(cs.tolist(), vector.tolist()):
        expected = brute_force(generated, train, c, k)
        assert value == pytest.approx(expected, abs=1e-12)
        assert memorisation_ratio(generated, train, c, neighbours=k).item() == pytest.approx(expected, abs=1e-12)
    assert bool((vector.diff() >= 0).all())  # a larger c memorises more


def test_default_threshold_is_one_third_and_k1_is_definition_2_1():
    g = torch.Generator().manual_seed(3)
    train, generated = torch.randn(10, 2, generator=g), torch.randn(50, 2, generator=g)
    assert torch.equal(memorisation_ratio(generated, train), memorisation_ratio(generated, train, 1 / 3, 1))
    assert memorisation_ratio(generated, train).item() == pytest.approx(brute_force(generated, train, 1 / 3))


def test_chunked_distances_match_one_pass(monkeypatch):
    g = torch.Generator().manual_seed(1)
    train, generated = torch.randn(20, 4, generator=g), torch.randn(103, 4, generator=g)
    full = neighbour_distances(generated, train, 2)
    monkeypatch.setattr(memorisation, "_CHUNK", 10)
    chunked = neighbour_distances(generated, train, 2)
    assert all(torch.allclose(a, b) for a, b in zip(full, chunked))


def test_duplicates_hide_copies_from_definition_2_1_but_not_from_the_k_variant():
    g = torch.Generator().manual_seed(2)
    base = 5 * torch.randn(20, 8, generator=g)
    train = torch.cat([base, base[:10]])  # ten training images appear twice
    near_copies = base[:10] + 1e-3 * torch.randn(10, 8, generator=g)
    assert memorisation_ratio(near_copies, train).item() == 0.0  # x^(2) is the duplicate: d1 ~ d2
    assert memorisation_ratio(near_copies, train, neighbours=10).item() == 1.0
    exact = base[:10]
    assert memorisation_ratio(exact, train).item() == 1.0  # 0 <= c * 0: exact copies still count


def test_is_memorised_shapes():
    train, generated = torch.randn(5, 2), torch.randn(7, 2)
    assert is_memorised(generated, train, 0.3).shape == (7,)
    assert is_memorised(generated, train, torch.tensor([0.1, 0.2])).shape == (2, 7)


@pytest.mark.parametrize(
    "generated, train, c, k, match",
    [
        (torch.zeros(4, 2), torch.zeros(3, 3), 0.3, 1, "dimension"),
        (torch.zeros(4), torch.zeros(3, 1), 0.3, 1, r"x\[:, None\]"),
        (torch.zeros(4, 1), torch.zeros(1, 1), 0.3, 1, "at least 2 training points"),
        (torch.zeros(4, 1), torch.zeros(5, 1), 0.3, 5, "at least 6 training points"),
        (torch.zeros(4, 1), torch.zeros(3, 1), 1.0, 1, r"open interval \(0, 1\)"),
        (torch.zeros(4, 1), torch.zeros(3, 1), torch.tensor([0.2, 0.0]), 1, r"open interval"),
        (torch.zeros(4, 1), torch.zeros(3, 1), torch.zeros(2, 2) + 0.5, 1, "1-D tensor"),
        (torch.full((4, 1), float("nan")), torch.zeros(3, 1), 0.3, 1, "non-finite"),
        (torch.zeros(4, 1), torch.zeros(3, 1), 0.3, 0, "neighbours"),
        (torch.zeros(0, 1), torch.zeros(3, 1), 0.3, 1, "generated has no points"),  # #21: was NaN
        (torch.full((2, 1), 1e200), torch.zeros(3, 1), 0.3, 1, "overflow float64"),
    ],
)
def test_clear_errors(generated, train, c, k, match):
    with pytest.raises(ValueError, match=match):
        memorisation_ratio(generated, train, c, neighbours=k)


def test_float32_points_far_out_are_not_memorised_and_lists_are_refused():
    """#21: in float32 the squared distances of far points overflowed to inf, and inf <= c * inf counted as
    memorised (ratio 1.0 in float32, 0.0 in float64 for the same points)."""
    train = torch.tensor([[0.0], [1.0], [2.0]])
    far = torch.tensor([[3e19], [-4e19]])
    assert float(memorisation_ratio(far.float(), train.float(), 0.3)) == float(memorisation_ratio(far.double(), train.double(), 0.3)) == 0.0
    with pytest.raises(TypeError, match="generated must be a torch tensor"):
        memorisation_ratio([[0.0]], train)


@pytest.mark.parametrize("c", [0.01, 0.1, 1 / 3, 0.8])
def test_memorised_interval_matches_a_dense_classification(c):
    a, b = torch.tensor([[-1.5]]), torch.tensor([[1.5]])
    train = torch.cat([a, b])
    lo, hi = memorised_interval(3.0, c)
    grid = torch.linspace(-1.5 + 1.1 * lo, 0, 1_000_001)[:, None]  # points nearer to a
    step = (grid[1] - grid[0]).item()
    memorised = is_memorised(grid, train, c)
    offsets = grid[memorised, 0] - a[0, 0]
    assert offsets.min().item() == pytest.approx(lo, abs=step)
    assert offsets.max().item() == pytest.approx(hi, abs=step)
    with pytest.raises(ValueError):
        memorised_interval(0.0, c)
    with pytest.raises(ValueError):
        memorised_interval(1.0, 1.2)


def test_theorem_4_1_window_matches_definition_2_1_by_brute_force():
    from support.evaluation.memorisation import theorem_4_1_window

    c, L = 0.2, 2.0
    train = torch.tensor([[0.0], [L]])
    generator = torch.Generator().manual_seed(5)
    d1 = torch.rand(2000, generator=generator) * (c**0.5 * L / (1 + c**0.5))  # memorised points near x1
    delta = torch.rand(2000, generator=generator) * (L - d1)
    lower, upper = theorem_4_1_window(d1, L - d1, c)
    predicted_free = (delta > lower) & (delta < upper)
    actual_free = ~is_memorised((d1 + delta)[:, None], train, c)
    assert bool((predicted_free == actual_free).all())
    assert 0.1 < predicted_free.double().mean() < 0.9  # both outcomes are exercised


def test_theorem_4_1_window_rejects_bad_input():
    from support.evaluation.memorisation import theorem_4_1_window

    with pytest.raises(ValueError, match="d1 <= d2"):
        theorem_4_1_window(2.0, 1.0, 0.3)
    with pytest.raises(ValueError, match="c must lie"):
        theorem_4_1_window(0.1, 1.0, 1.0)


def test_copy_fraction_counts_points_within_the_tolerance_of_a_training_point():
    from support.evaluation.memorisation import copy_fraction

    train = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    generated = torch.tensor([[3.0, 4.0], [1e-7, 0.0], [0.0, 2e-6], [1.5, 2.0]])
    assert copy_fraction(generated, train, tolerance=1e-6) == 0.5
    assert copy_fraction(generated, train, tolerance=3e-6) == 0.75
    with pytest.raises(ValueError, match="tolerance"):
        copy_fraction(generated, train, tolerance=0.0)


def test_nearest_neighbours_index_and_distances_match_brute_force():
    g = torch.Generator().manual_seed(4)
    train, generated = torch.randn(15, 3, generator=g), torch.randn(40, 3, generator=g)
    found = memorisation.nearest_neighbours(generated, train, neighbours=3)
    squared = ((generated[:, None, :] - train[None, :, :]) ** 2).sum(-1)
    ordered = squared.sort(dim=1)
    assert torch.equal(found.index, ordered.indices[:, 0])
    assert torch.allclose(found.d1, ordered.values[:, 0])
    assert torch.allclose(found.d_ref, ordered.values[:, 1:4].mean(dim=1))
    # Definition 2.1 from these distances is is_memorised's verdict
    assert torch.equal(memorisation.memorised_from(found.d1, found.d_ref, 0.4), is_memorised(generated, train, 0.4, 3))
