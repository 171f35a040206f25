"""The digits chapter's pieces: native 8 x 8 scans, the split, the feature classifier, the sample
judge, Tweedie denoising, per-model generation noise, checkpoint diagnostics and the fingerprint
that lets a training run resume in another interpreter.

Tensors for the (float32) networks get an explicit dtype: other tests in the same worker may
have set float64 as the default."""

import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from diffusers import UNet2DModel

from support.core.parameters import flatten, select_parameters
from support.data.image_data import load_digits_8x8, load_images
from support.experiments.cifar_experiment import memorisation_of
from support.experiments.digits_experiment import (
    SampleJudge, distinct_nearest, image_diversity, over_batches, quality_at_equal_memorisation, split_digits,
)
from support.infra.plotting import show_image
from support.models.cifar_unet import ddpm_scheduler, digits_unet_config, make_twice_differentiable, unet_config
from support.models.ddim import ddim_scheduler, generate_images, tweedie_denoise
from support.models.ddpm_training import TrainingPlan, train_ddpm
from support.models.digit_classifier import DigitClassifier, train_classifier

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits():
    return load_digits_8x8()


def test_native_digits_are_the_stored_scans_without_interpolation(digits):
    from sklearn.datasets import load_digits

    raw = load_digits()
    assert digits.images.shape == (1797, 1, 8, 8) and digits.images.dtype == torch.uint8
    # the 17 grey levels 0..16 map to round(level * 255 / 16): nothing else appears
    expected = torch.from_numpy(np.round(raw.images / 16 * 255)).to(torch.uint8)[:, None]
    assert torch.equal(digits.images, expected)
    assert torch.equal(digits.labels, torch.from_numpy(raw.target).long())
    assert digits.scaled().min() == -1 and digits.scaled().max() == 1
    assert load_images("digits-8x8").images.shape == digits.images.shape
    with pytest.raises(ValueError, match="digits-8x8"):
        load_images("mnist")


def test_the_split_is_disjoint_and_covers_every_digit_once(digits):
    split = split_digits(digits, 50, torch.Generator().manual_seed(0))
    parts = [split.train, split.classifier, split.reference]
    assert [len(p) for p in parts] == [50, (1797 - 50) // 2, 1797 - 50 - (1797 - 50) // 2]
    flat = torch.cat(parts).flatten(1)
    everything = digits.scaled().flatten(1)
    # every split image is one of the digits, and the three parts together are all of them, with their labels
    distances = torch.cdist(flat, everything, compute_mode="donot_use_mm_for_euclid_dist")
    match = distances.argmin(dim=1)
    assert torch.equal(distances.min(dim=1).values, torch.zeros(len(flat)))
    labels = torch.cat([split.train_labels, split.classifier_labels, split.reference_labels])
    assert torch.equal(digits.labels[match], labels)
    assert len(torch.unique(flat, dim=0)) == len(torch.unique(everything, dim=0))  # nothing twice, nothing left out
    with pytest.raises(ValueError, match="held out"):
        split_digits(digits, 1795, torch.Generator().manual_seed(0))


def test_the_digits_unet_has_the_documented_size_and_shapes():
    torch.manual_seed(0)
    unet = UNet2DModel(**unet_config("digits-8x8")).float()
    assert sum(p.numel() for p in unet.parameters()) == 701_345
    assert sum(p.numel() for p in unet.conv_in.parameters()) == 320
    out = unet(torch.zeros(2, 1, 8, 8, dtype=torch.float32), torch.tensor(10)).sample
    assert out.shape == (2, 1, 8, 8)
    assert digits_unet_config()["in_channels"] == 1


def test_the_classifier_learns_digits_and_is_reproducible(digits):
    images, labels = digits.scaled()[:600], digits.labels[:600]
    first = train_classifier(images, labels, 10, torch.Generator().manual_seed(1), seed=3, progress=False)
    again = train_classifier(images, labels, 10, torch.Generator().manual_seed(1), seed=3, progress=False)
    for p, q in zip(first.parameters(), again.parameters()):
        assert torch.equal(p, q)
    held_out_accuracy = first.accuracy(digits.scaled()[600:1200], digits.labels[600:1200])
    assert held_out_accuracy > 0.85, held_out_accuracy  # chance is 0.1
    assert first.features(images[:5]).shape == (5, 64)
    state = torch.random.get_rng_state()
    train_classifier(images, labels, 1, torch.Generator().manual_seed(1), seed=3, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    with pytest.raises(ValueError, match="8, 8"):
        DigitClassifier().features(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="NaN"):
        train_classifier(torch.full((64, 1, 8, 8), float("nan"), dtype=torch.float32), labels[:64], 1, torch.Generator(), seed=0)


def test_tweedie_denoising_with_the_true_noise_returns_the_clean_image():
    scheduler = ddpm_scheduler()
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(4, 1, 8, 8, generator=generator, dtype=torch.float32) * 1.6 - 0.8
    noise = torch.randn(4, 1, 8, 8, generator=generator, dtype=torch.float32)
    t = 300
    abar = scheduler.alphas_cumprod[t]
    noisy = abar.sqrt() * clean + (1 - abar).sqrt() * noise
    denoised = tweedie_denoise(lambda x, steps: noise, noisy, scheduler, t)
    assert torch.allclose(denoised, clean, atol=1e-5)
    # a zero noise prediction only rescales: x / sqrt(abar), clamped
    assert torch.allclose(tweedie_denoise(lambda x, steps: torch.zeros_like(x), clean * 0.5, scheduler, t),
                          (clean * 0.5 / abar.sqrt()).clamp(-1, 1))
    with pytest.raises(ValueError, match="timestep"):
        tweedie_denoise(lambda x, steps: x, noisy, scheduler, 1000)


def test_generation_with_noise_per_model_equals_one_call_per_model():
    torch.manual_seed(0)
    unet = make_twice_differentiable(UNet2DModel(**unet_config("digits-8x8"))).double().eval()
    layout = select_parameters(unet, ["conv_in"])
    theta = flatten(unet, layout).detach()
    thetas = theta + 0.05 * torch.randn(3, layout.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    noise = torch.randn(3, 2, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ddim = ddim_scheduler(ddpm_scheduler(), 4)
    together = generate_images(unet, layout, thetas, noise, ddim)
    for m in range(3):
        alone = generate_images(unet, layout, thetas[m:m + 1], noise[m], ddim)[0]
        assert torch.allclose(together[m], alone, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="M = 3"):
        generate_images(unet, layout, thetas, noise[:2], ddim)


def test_training_records_diagnostics_and_keeps_the_last_checkpoint_without_a_score(tmp_path):
    images = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float32) * 2 - 1
    torch.manual_seed(0)
    unet = UNet2DModel(**unet_config("digits-8x8")).float()
    seen = []

    def diagnostics(model):
        seen.append(1)
        return {"calls": len(seen), "weight_norm": sum(p.detach().square().sum() for p in model.parameters())}

    plan = TrainingPlan(epochs=4, batch_size=4, learning_rate=1e-3, checkpoint_every=2)
    record = train_ddpm(unet, images, ddpm_scheduler(), plan, tmp_path, torch.Generator().manual_seed(4),
                        progress=False, diagnostics=diagnostics)
    assert [h["calls"] for h in record.history] == [1.0, 2.0]
    assert all("score" not in h for h in record.history) and record.best_epoch == 4


FINGERPRINT = """
import torch
from diffusers import UNet2DModel
from support.models.cifar_unet import unet_config
from support.models.ddpm_training import TrainingPlan, _fingerprint
torch.manual_seed(0)
unet = UNet2DModel(**unet_config("digits-8x8"))
print(_fingerprint(TrainingPlan(2, 4, 1e-3, 1), torch.zeros(3, 1, 8, 8), unet))
"""


def test_the_training_fingerprint_is_the_same_in_every_interpreter():
    """diffusers' config lists its defaulted names in set order, which follows the hash seed: with that entry
    in the fingerprint, no interpreter could resume another's training checkpoint (found in the digits chapter)."""
    prints = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        out = subprocess.run([sys.executable, "-c", FINGERPRINT], capture_output=True, text=True, env=env, check=True,
                             timeout=300)
        prints.add(out.stdout.strip())
    assert len(prints) == 1, prints


def _judge(digits):
    split = split_digits(digits, 40, torch.Generator().manual_seed(0))
    classifier = train_classifier(split.classifier, split.classifier_labels, 3, torch.Generator().manual_seed(1),
                                  seed=0, progress=False)
    return split, SampleJudge(split, classifier, denoise=lambda images: images)


def test_the_judge_sees_copies_as_memorised_and_noise_as_new(digits):
    split, judge = _judge(digits)
    copies = judge(split.train.repeat(3, 1, 1, 1))
    assert copies.memorisation == 1.0 and copies.nearest_distance == 0.0 and copies.denoised_memorisation == 1.0
    # a copy is labelled as its own training digit unless the classifier errs on it
    errors = (judge.classifier.predict(split.train) != split.train_labels).double().mean().item()
    assert copies.novelty == pytest.approx(errors)
    noise = torch.rand(120, 1, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float32) * 2 - 1
    new = judge(noise)
    assert new.memorisation == 0.0 and new.nearest_distance > 3
    assert new.feature_fd > copies.feature_fd and new.pixel_fd > copies.pixel_fd
    mixed = torch.cat([split.train[:10] + 0.01 * noise[:10], noise[10:40]])  # the judge's ratio is App. D.4's
    assert judge(mixed).memorisation == pytest.approx(memorisation_of(mixed, split.train)) == pytest.approx(0.25)
    assert distinct_nearest(judge, split.train) == len(split.train)
    assert distinct_nearest(judge, split.train[:1].repeat(5, 1, 1, 1)) == 1
    with pytest.raises(ValueError, match="NaN"):
        judge(torch.full((4, 1, 8, 8), float("nan"), dtype=torch.float32))


def test_over_batches_gives_the_mean_and_standard_error_of_each_measure(digits):
    split, judge = _judge(digits)
    qualities = [judge(split.train[i::3].repeat(2, 1, 1, 1)) for i in range(3)]
    summary = over_batches(qualities)
    values = np.array([q.feature_fd for q in qualities])
    assert summary["feature_fd"].mean == pytest.approx(values.mean())
    assert summary["feature_fd"].standard_error == pytest.approx(values.std(ddof=1) / np.sqrt(3))
    with pytest.raises(ValueError, match="two batches"):
        over_batches(qualities[:1])


def test_quality_at_equal_memorisation_interpolates_each_curve():
    curves = {"a": ([0.9, 0.5, 0.1], [1.0, 3.0, 5.0]),  # quality = 5.5 - 5 m, listed in falling memorisation
              "b": ([0.0, 0.6], [2.0, 2.6])}  # quality = 2 + m
    levels, at = quality_at_equal_memorisation(curves, points=4)
    assert levels[0] == pytest.approx(0.1) and levels[-1] == pytest.approx(0.6)
    assert np.allclose(at["a"], 5.5 - 5 * levels) and np.allclose(at["b"], 2 + levels)
    with pytest.raises(ValueError, match="overlap"):
        quality_at_equal_memorisation({"a": ([0.8, 0.9], [1, 2]), "b": ([0.1, 0.2], [1, 2])})


def test_image_diversity_is_the_mean_pairwise_distance():
    images = torch.zeros(3, 1, 2, 2, dtype=torch.float64)
    images[1, 0, 0, 0] = 3.0
    images[2, 0, 0, 0] = 3.0
    images[2, 0, 1, 1] = 4.0
    # distances: 0-1: 3, 0-2: 5, 1-2: 4
    assert image_diversity(images) == pytest.approx((3 + 5 + 4) / 3)
    assert image_diversity(images[:1].repeat(4, 1, 1, 1)) == 0.0
    with pytest.raises(ValueError, match="two images"):
        image_diversity(images[:1])


def test_grey_images_are_drawn_in_grey():
    fig, ax = plt.subplots()
    show_image(ax, torch.linspace(-1, 1, 64).reshape(1, 8, 8))
    drawn = ax.get_images()[0]
    assert drawn.get_array().shape == (8, 8) and drawn.get_cmap().name == "gray"
    plt.close(fig)
