"""Profiles, seeding and the shared plotting style."""

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from support.infra.plotting import METHOD_COLORS, METHOD_LABELS, method_color, use_book_style  # noqa: E402
from support.infra.profiles import DEFAULT_SEED, PROFILE_NAMES, default_profile_name, get_profile  # noqa: E402
from support.infra.reproducibility import seed_everything  # noqa: E402


def test_default_profile_follows_cuda(monkeypatch):
    monkeypatch.delenv("BOOK_PROFILE", raising=False)
    expected = "paper" if torch.cuda.is_available() else "smoke"
    assert default_profile_name() == expected
    assert get_profile().name == expected


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_profile_from_environment(monkeypatch, name):
    monkeypatch.setenv("BOOK_PROFILE", f" {name.upper()} ")
    profile = get_profile()
    assert profile.name == name
    assert name in profile.describe() and str(profile.dtype) in profile.describe()


def test_smoke_is_cpu_and_smaller_than_paper():
    smoke, paper = get_profile("smoke"), get_profile("paper")
    assert smoke.device.type == "cpu"
    assert smoke.flow_matching.train_steps <= paper.flow_matching.train_steps
    assert smoke.memorisation.n_samples <= paper.memorisation.n_samples
    assert smoke.flow_matching.hidden == paper.flow_matching.hidden  # same model, other sizes


def test_unknown_profile_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("BOOK_PROFILE", "huge")
    with pytest.raises(ValueError, match="smoke, paper"):
        get_profile()


def test_seeding_is_reproducible():
    g = seed_everything(5)
    a = torch.randn(3, generator=g), torch.randn(3)
    g = seed_everything(5)
    b = torch.randn(3, generator=g), torch.randn(3)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError):
        seed_everything(-1)


def test_style_and_colours():
    use_book_style()
    assert set(METHOD_COLORS) == set(METHOD_LABELS)
    assert len(set(METHOD_COLORS.values())) == len(METHOD_COLORS)
    assert method_color("riemannian") == METHOD_COLORS["riemannian"]
    with pytest.raises(KeyError, match="known"):
        method_color("bayes")


def test_book_seed_replaces_the_seed_and_names_the_build_folder(monkeypatch):
    monkeypatch.setenv("BOOK_SEED", " 3 ")
    profile = get_profile("smoke")
    assert profile.seed == 3 and profile.run_name == "smoke-seed3" and "seed=3" in profile.describe()
    monkeypatch.setenv("BOOK_SEED", str(DEFAULT_SEED))
    assert get_profile("paper").run_name == "paper"
    monkeypatch.delenv("BOOK_SEED")
    assert get_profile("smoke").seed == DEFAULT_SEED and get_profile("smoke").run_name == "smoke"


@pytest.mark.parametrize("bad", ["-1", "1.5", "abc", "nan"])
def test_bad_book_seed_is_a_clear_error(monkeypatch, bad):
    monkeypatch.setenv("BOOK_SEED", bad)
    with pytest.raises(ValueError, match="BOOK_SEED"):
        get_profile("smoke")
