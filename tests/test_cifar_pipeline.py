"""The CIFAR-10 pipeline after the U-Net: DDIM as a flow, generation, training with resume,
the Fréchet selection score, the stand-in images and the perturbation stages.

Tensors for the (float32) U-Net get an explicit dtype: other tests in the same worker may have
set float64 as the default."""

import warnings

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.optimize import brentq
from diffusers import UNet2DModel

from support.core.geodesics import solve_geodesics
from support.core.laplace import exact_laplace, hessian_vector_product
from support.core.parameters import flatten, select_parameters
from support.data.image_data import held_out_images, load_digits_stand_in, random_subset
from support.data.image_set import ImageSet
from support.evaluation.frechet import frechet_distance, pixel_features
from support.experiments.cifar_experiment import (
    PosteriorPerturbations,
    draw_hessian_batches,
    image_change,
    memorisation_of,
    metric_reach,
    perturb_along_directions,
    posterior_perturbations,
    slope_and_curvature,
)
from support.experiments.toy_losses import banana_loss
from support.infra.results import CheckpointError
from support.models.cifar_unet import ddpm_scheduler, make_twice_differentiable, smoke_unet_config
from support.models.ddim import ddim_flow_step, ddim_sample, ddim_scheduler, ensemble_denoiser, generate_images
from support.models.ddpm_training import TrainingPlan, train_ddpm

TINY = {**smoke_unet_config(), "sample_size": 8}


def tiny_unet(seed: int = 0, **config) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(**{**TINY, **config}).float()


def test_a_ddim_step_is_an_euler_step_of_the_eq6_flow():
    ddim = ddim_scheduler(ddpm_scheduler(), 50)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 8, 8, generator=generator, dtype=torch.float64)
    steps = ddim.timesteps.tolist()
    for i, t in enumerate(steps):
        eps = torch.randn(x.shape, generator=generator, dtype=torch.float64)
        nxt = ddim.alphas_cumprod[steps[i + 1]] if i + 1 < len(steps) else ddim.final_alpha_cumprod
        euler = ddim_flow_step(x, eps, ddim.alphas_cumprod[t].double(), nxt.double())
        x = ddim.step(eps, t, x).prev_sample
        assert torch.allclose(x, euler, rtol=1e-6, atol=1e-6)  # the scheduler keeps abar in float32


def test_ddim_with_the_exact_noise_of_one_image_returns_that_image():
    ddim = ddim_scheduler(ddpm_scheduler(), 50)
    target = torch.rand(3, 8, 8, dtype=torch.float64) * 1.6 - 0.8
    abar = ddim.alphas_cumprod.double()
    # For a one-image data set the optimal noise prediction is (x - sqrt(abar) y) / sqrt(1 - abar).
    out = ddim_sample(lambda x, t: (x - abar[t].sqrt() * target) / (1 - abar[t]).sqrt(),
                      torch.randn(2, 3, 8, 8, dtype=torch.float64), ddim)
    assert torch.allclose(out, target.expand_as(out), atol=1e-8)


def test_ddim_scheduler_rejects_zero_steps():
    with pytest.raises(ValueError, match="steps"):
        ddim_scheduler(ddpm_scheduler(), 0)


def test_vmapped_generation_equals_one_model_at_a_time():
    # float64: in float32 the batched and the single products round differently (1e-6 per network
    # call), and five DDIM steps of the untrained net amplify that to ~1e-5 in the images
    unet = make_twice_differentiable(tiny_unet()).double().eval()
    layout = select_parameters(unet, ["conv_in"])
    theta = flatten(unet, layout).detach()
    thetas = theta + 0.05 * torch.randn(3, layout.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x0 = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ddim = ddim_scheduler(ddpm_scheduler(), 5)
    together = generate_images(unet, layout, thetas, x0, ddim, models_per_pass=3)
    alone = generate_images(unet, layout, thetas, x0, ddim, models_per_pass=1)
    assert together.shape == (3, 2, 3, 8, 8) and together.dtype == torch.float64
    assert torch.allclose(together, alone, rtol=0, atol=1e-12)
    assert not torch.allclose(together[0], together[1], atol=1e-3)  # the three models do differ
    with torch.no_grad():  # the M = 1 path is the plain network
        plain = unet(x0, torch.tensor(500)).sample
        assert torch.allclose(ensemble_denoiser(unet, layout, theta[None])(x0[None], torch.tensor(500))[0], plain,
                              rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="finite"):
        generate_images(unet, layout, torch.full_like(thetas, float("nan")), x0, ddim)


def test_frechet_distance_matches_the_closed_form_of_two_1d_gaussians():
    generator = torch.Generator().manual_seed(0)
    a = 2.0 + 0.5 * torch.randn(400, 1, generator=generator, dtype=torch.float64)
    b = -1.0 + 1.5 * torch.randn(300, 1, generator=generator, dtype=torch.float64)
    expected = (a.mean() - b.mean()) ** 2 + (a.std() - b.std()) ** 2  # W2^2 of 1-D Gaussians
    assert frechet_distance(a, b) == pytest.approx(expected.item(), rel=1e-10)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-10)


def test_frechet_distance_agrees_with_scipy_sqrtm_in_several_dimensions():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(200, 5, generator=generator, dtype=torch.float64) @ torch.randn(5, 5, generator=generator, dtype=torch.float64)
    b = torch.randn(150, 5, generator=generator, dtype=torch.float64) + 1.0
    ca, cb = torch.cov(a.T).numpy(), torch.cov(b.T).numpy()
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum().item() + ca.trace() + cb.trace() - 2 * scipy_linalg.sqrtm(ca @ cb).real.trace()
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    assert pixel_features(torch.zeros(4, 3, 32, 32)).shape == (4, 192)
    with pytest.raises(ValueError, match="features"):
        frechet_distance(a, b[:, :3])


def _train(folder, interrupt_at=None, epochs=6, architecture=None, **options):
    images = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float32) * 2 - 1
    calls = []

    def score(model):
        calls.append(1)
        if interrupt_at is not None and len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return float(sum(p.detach().square().sum() for p in model.parameters()))  # any deterministic score

    unet = tiny_unet(**(architecture or {}))
    plan = TrainingPlan(**{"epochs": epochs, "batch_size": 4, "learning_rate": 1e-3, "checkpoint_every": 2, **options})
    record = train_ddpm(unet, images, ddpm_scheduler(), plan, folder, torch.Generator().manual_seed(4), score, progress=False)
    return unet, record


def test_training_resumes_after_an_interruption_with_the_same_result(tmp_path):
    straight, record = _train(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "interrupted", interrupt_at=2)  # dies while scoring epoch 4: the epoch-2 checkpoint survives
    assert torch.load(tmp_path / "interrupted" / "latest.pt", weights_only=False)["epoch"] == 2
    resumed, resumed_record = _train(tmp_path / "interrupted")
    assert resumed_record.resumed_from == 2
    assert [h["epoch"] for h in resumed_record.history] == [2, 4, 6]
    assert [h["score"] for h in resumed_record.history] == pytest.approx([h["score"] for h in record.history], rel=1e-6)
    for p, q in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6)
    scores = [h["score"] for h in record.history]
    assert record.best_epoch == record.history[scores.index(min(scores))]["epoch"]
    assert not list((tmp_path / "straight").glob("*.tmp"))  # atomic writes leave no temporary files
    again, again_record = _train(tmp_path / "straight")  # finished: loads, does not retrain
    assert again_record.resumed_from == 6


def test_a_checkpoint_of_another_plan_is_not_resumed(tmp_path):
    _train(tmp_path, epochs=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, record = _train(tmp_path, epochs=4, learning_rate=2e-3)
    assert record.resumed_from == 0 and any("another run" in str(w.message) for w in caught)


def test_more_epochs_resume_the_shorter_run_and_give_the_uninterrupted_result(tmp_path):
    """#21 D2: the epoch count is where the trajectory stops; raising it must not discard the run."""
    straight, record = _train(tmp_path / "straight", epochs=6)
    _train(tmp_path / "extended", epochs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "another run" warning: the checkpoint is this run's
        extended, extended_record = _train(tmp_path / "extended", epochs=6)
    assert extended_record.resumed_from == 2
    assert [h["epoch"] for h in extended_record.history] == [2, 4, 6]
    assert [h["score"] for h in extended_record.history] == pytest.approx([h["score"] for h in record.history], rel=1e-6)
    for p, q in zip(straight.state_dict().values(), extended.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6)


def test_fewer_epochs_than_the_checkpoint_has_trained_is_refused_with_the_fix(tmp_path):
    _train(tmp_path, epochs=4)
    with pytest.raises(ValueError, match=r"trained 4 epochs, more than plan.epochs = 2; ask for at least 4"):
        _train(tmp_path, epochs=2)
    assert torch.load(tmp_path / "latest.pt", weights_only=True)["epoch"] == 4  # nothing was overwritten


def test_a_checkpoint_of_another_architecture_with_the_same_weights_is_not_resumed(tmp_path):
    _train(tmp_path, epochs=2)
    heads = dict(attention_head_dim=8)  # 4 heads of 8 channels instead of 1 of 32: the same weight tensors
    assert all(torch.equal(p, q) for p, q in zip(tiny_unet().state_dict().values(), tiny_unet(**heads).state_dict().values()))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, record = _train(tmp_path, epochs=2, architecture=heads)
    assert record.resumed_from == 0 and any("architecture" in str(w.message) for w in caught)


def test_the_gpu_training_options_run_compile_keeps_the_loss_and_bf16_changes_it_slightly(tmp_path, monkeypatch):
    """The paper profile's CUDA settings (torch.compile, bf16 autocast), run on a CPU.

    torch.compile gets the ``aot_eager`` backend here: dynamo's tracing of the U-Net and AOT
    autograd's backward are what a GPU run uses too, while inductor's C++ code generation alone
    takes about 105 s on two cores. Run by hand with the default (inductor) backend: the same
    first-checkpoint loss (the mean over four Adam steps) to 1e-7 relative, and inductor with
    bf16 ran as well. Weights are not compared: Adam moves a weight with a near-zero gradient by
    up to the learning rate in the direction of its rounding error.
    """
    compiled_modules = []
    original_compile = torch.compile

    def compile_eagerly(module, **options):
        compiled_modules.append(module)
        return original_compile(module, backend="aot_eager", **options)

    _, eager_record = _train(tmp_path / "eager", epochs=2)
    monkeypatch.setattr(torch, "compile", compile_eagerly)
    compiled, compiled_record = _train(tmp_path / "compiled", epochs=2, compile=True)
    assert len(compiled_modules) == 1 and compiled_modules[0] is compiled  # the trainer compiled the U-Net it trains
    _, bf16_record = _train(tmp_path / "bf16", epochs=2, mixed_precision=True)
    assert len(compiled_modules) == 1
    losses = [record.history[0]["loss"] for record in (eager_record, compiled_record, bf16_record)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert losses[2] == pytest.approx(losses[0], rel=1e-2) and losses[2] != losses[0]  # bf16 rounding is active


def test_training_rejects_unscaled_images(tmp_path):
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        train_ddpm(tiny_unet(), torch.full((2, 3, 8, 8), 255.0, dtype=torch.float32), ddpm_scheduler(), TrainingPlan(1, 2, 1e-3, 1),
                   tmp_path, torch.Generator())


def test_the_digit_stand_in_has_cifar_shape_and_held_out_images_are_disjoint():
    data = load_digits_stand_in()
    assert data.images.shape == (1797, 3, 32, 32) and data.images.dtype == torch.uint8
    assert torch.equal(data.images[:, 0], data.images[:, 2])  # grey, repeated over RGB
    assert set(data.labels.tolist()) == set(range(10))
    generator = torch.Generator().manual_seed(0)
    train, index = random_subset(data, 200, generator)
    held = held_out_images("digits", data, index, 50, generator)
    train_set = {tuple(x.flatten().tolist()) for x in data.images[index]}
    scaled_pool = data.scaled()
    unused = sorted(set(range(len(data.images))) - set(index.tolist()))
    assert all(any(torch.equal(h, scaled_pool[i]) for i in unused) for h in held[:5])
    assert train.min() >= -1 and train.max() <= 1 and len(train_set) > 190
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long), "x")


def test_hessian_batches_are_disjoint_and_too_many_are_refused():
    images = torch.arange(10, dtype=torch.float32)[:, None, None, None].expand(10, 3, 2, 2) / 10
    batches = draw_hessian_batches(images, 3, 3, ddpm_scheduler(), torch.Generator().manual_seed(0))
    seen = torch.cat([b.images[:, 0, 0, 0] for b in batches])
    assert len(set(seen.tolist())) == 9
    with pytest.raises(ValueError, match="disjoint"):
        draw_hessian_batches(images, 4, 3, ddpm_scheduler(), torch.Generator())


def test_posterior_perturbations_use_exp_of_eta_v_equals_the_geodesic_at_time_eta():
    loss = banana_loss()
    theta = torch.zeros(2, dtype=torch.float64)
    laplace = exact_laplace(loss, theta)
    etas = (0.5, 1.0, 2.0)
    out = posterior_perturbations(loss, theta, laplace, etas, 3, torch.Generator().manual_seed(0), rtol=1e-9, atol=1e-11)
    assert out.filtered == 0 and out.riemannian.shape == (3, 3, 2)
    for e, eta in enumerate(etas):  # reparametrisation: Exp(eta v) solved on its own for unit time
        direct = solve_geodesics(loss, theta, eta * out.v, rtol=1e-9, atol=1e-11).position[-1]
        assert torch.allclose(out.riemannian[e], direct, atol=1e-6)
        assert torch.allclose(out.euclidean[e], theta + eta * out.v)
    with pytest.raises(ValueError, match="increasing"):
        posterior_perturbations(loss, theta, laplace, (1.0, 0.5), 2, torch.Generator())


def test_theorem_4_2_reach_matches_the_arc_length_of_a_graph_off_its_minimum():
    """On L(theta) = g theta - k theta^2 / 2 (K = 1) the geodesic from 0 with velocity v runs along the graph at
    the constant metric speed sqrt(1 + g^2) v, so its endpoint x solves the arc-length equation
    int_0^x sqrt(1 + (g - k t)^2) dt = sqrt(1 + g^2) v (scipy). The slope flattens, so x exceeds the plain
    bound v of the paper's Theorem 4.2 (which assumes grad L = 0) but not the metric length."""
    g, k = 1.0, 1.0
    loss = lambda theta: g * theta[0] - k * theta[0] ** 2 / 2
    theta = torch.zeros(1, dtype=torch.float64)
    steps = torch.tensor([[0.25], [0.5], [-0.5]], dtype=torch.float64)
    end = solve_geodesics(loss, theta, steps, rtol=1e-10, atol=1e-12).position[-1]
    gradient = torch.tensor([g], dtype=torch.float64)
    reach = metric_reach(theta, steps, end, gradient)
    for u, found in zip(steps[:, 0].tolist(), reach.tolist()):
        length = np.sqrt(1 + g ** 2) * abs(u)
        arc = lambda x: quad(lambda t: np.sqrt(1 + (g - k * t) ** 2), 0.0, x)[0] - np.sign(u) * length
        x = brentq(arc, -10.0, 10.0)
        assert found == pytest.approx(abs(x) / length, rel=1e-7)
    assert bool((reach < 1).all())
    plain = metric_reach(theta, steps, end, torch.zeros_like(gradient))  # ||Exp(u) - theta|| / ||u||
    assert plain[0] > 1 and plain[1] > 1 and plain[2] < 1, plain  # uphill the slope flattens, downhill it steepens


def test_theorem_4_2_reach_skips_filtered_geodesics_and_refuses_non_finite_or_mismatched_input():
    theta = torch.zeros(2, dtype=torch.float64)
    v = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    etas = (0.5, 1.0)
    euclidean = torch.stack([theta + eta * v for eta in etas])
    riemannian = euclidean * 0.9
    riemannian[:, 1] = float("nan")  # the second geodesic was filtered
    out = PosteriorPerturbations(etas, v, euclidean, riemannian, torch.tensor([True, False]), torch.tensor([10, 0]), 0.0)
    gradient = torch.tensor([3.0, 0.0], dtype=torch.float64)
    reach = out.metric_reach(theta, gradient)
    assert reach.shape == (2, 1)
    assert torch.allclose(reach, torch.full((2, 1), 0.9 / np.sqrt(10), dtype=torch.float64))  # ||v||_G = sqrt(1 + 9)
    with pytest.raises(ValueError, match="converged"):
        metric_reach(theta, euclidean, riemannian, gradient)
    with pytest.raises(ValueError, match="shape"):
        metric_reach(theta, euclidean, riemannian[:, :1], gradient)


def test_image_change_is_the_per_base_sample_distance_to_the_reference_with_its_standard_error():
    reference = torch.zeros(4, 1, 2, 2)
    images = reference.clone()
    for i, distance in enumerate((1.0, 2.0, 3.0, 6.0)):
        images[i, 0, 0, 0] = distance
    change = image_change(images, reference)
    assert change.values.tolist() == [1.0, 2.0, 3.0, 6.0]
    assert change.mean == pytest.approx(3.0) and change.standard_error == pytest.approx(np.std([1, 2, 3, 6], ddof=1) / 2)
    with pytest.raises(ValueError, match="shape"):
        image_change(images, reference[:3])
    images[0, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        image_change(images, reference)


def test_direction_paths_curvature_matches_the_exact_hessian_and_the_metric_speed_is_constant():
    loss = banana_loss()
    theta = torch.tensor([0.3, -0.2], dtype=torch.float64)
    velocities = torch.tensor([[1.0, 0.5], [-0.4, 0.8]], dtype=torch.float64)
    times = torch.linspace(0, 1, 5, dtype=torch.float64)
    paths = perturb_along_directions(loss, theta, velocities, times, chunk_size=1, rtol=1e-10, atol=1e-12)
    assert bool(paths.converged.all())
    for t in range(len(times)):
        for d in range(2):
            for position, velocity, curvature in ((paths.straight[t, d], velocities[d], paths.straight_curvature[t, d]),
                                                  (paths.geodesic[t, d], paths.geodesic_velocity[t, d],
                                                   paths.geodesic_curvature[t, d])):
                exact = velocity @ torch.func.hessian(loss)(position) @ velocity
                assert curvature.item() == pytest.approx(exact.item(), rel=1e-10, abs=1e-12)
    # ||alpha'||_G is constant along a geodesic (App. B.2), and not along the straight line
    speed = paths.geodesic_metric_speed
    assert float((speed / speed[0] - 1).abs().max()) < 1e-7
    straight_speed = (velocities.square().sum(-1) + torch.stack(
        [torch.func.grad(loss)(p) @ v for p, v in zip(paths.straight[-1], velocities)]).square()).sqrt()
    assert float((straight_speed / speed[0] - 1).abs().max()) > 1e-3
    # "the Riemannian path favours low-loss regions" is no theorem: along the second direction the
    # curvature turns negative, eq (19) bends the geodesic uphill and its loss ends above the straight path's
    assert paths.geodesic_curvature[1, 1] < 0 < paths.geodesic_curvature[0, 1]
    assert paths.geodesic_loss[-1, 1] > 1.1 * paths.straight_loss[-1, 1]
    with pytest.raises(ValueError, match="same shape"):
        slope_and_curvature(loss, paths.straight, velocities)


def test_memorisation_of_copies_is_one_and_of_noise_is_zero():
    generator = torch.Generator().manual_seed(0)
    train = torch.rand(30, 3, 4, 4, generator=generator)
    assert memorisation_of(train[:5], train) == 1.0
    assert memorisation_of(torch.rand(5, 3, 4, 4, generator=generator) + 5, train) == 0.0


def test_reverse_and_forward_hessian_vector_products_agree():
    loss = banana_loss()
    theta = torch.tensor([0.3, -0.2], dtype=torch.float64)
    v = torch.tensor([1.0, 2.0], dtype=torch.float64)
    assert torch.allclose(hessian_vector_product(loss, theta, "reverse")(v), hessian_vector_product(loss, theta, "forward")(v))
    with pytest.raises(ValueError, match="mode"):
        hessian_vector_product(loss, theta, "sideways")


def test_non_finite_images_scores_and_losses_stop_training_with_their_cause(tmp_path):
    """#21: NaN images used to train to NaN weights saved as best.pt; a NaN score ended in 'best.pt is missing'."""
    images = torch.zeros(2, 3, 8, 8, dtype=torch.float32)  # explicit: another test module sets float64 as default
    images[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        train_ddpm(tiny_unet(), images, ddpm_scheduler(), TrainingPlan(1, 2, 1e-3, 1), tmp_path / "nan", torch.Generator())
    good = torch.zeros(2, 3, 8, 8, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"selection score is nan at epoch 1"):
        train_ddpm(tiny_unet(), good, ddpm_scheduler(), TrainingPlan(1, 2, 1e-3, 1), tmp_path / "score",
                   torch.Generator(), score=lambda unet: float("nan"))
    for bad in (float("inf"), float("nan"), 0.0):
        with pytest.raises(ValueError, match="must be positive"):
            TrainingPlan(1, 2, bad, 1)
    with pytest.raises(FloatingPointError, match=r"loss became (nan|inf) by epoch 2; lower the learning rate"):
        train_ddpm(tiny_unet(), good, ddpm_scheduler(), TrainingPlan(2, 2, 1e30, 1), tmp_path / "loss",
                   torch.Generator())
    assert torch.load(tmp_path / "loss" / "latest.pt", weights_only=True)["epoch"] == 1  # the finite one is kept


def test_damaged_training_checkpoints_name_the_file_and_the_fix(tmp_path):
    """#21: a truncated or wrong-structure latest.pt gave a bare EOFError / KeyError."""
    good = torch.zeros(2, 3, 8, 8, dtype=torch.float32)
    folder = tmp_path / "run"
    train_ddpm(tiny_unet(), good, ddpm_scheduler(), TrainingPlan(1, 2, 1e-3, 1), folder, torch.Generator())
    latest = folder / "latest.pt"
    latest.write_bytes(latest.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"latest.pt cannot be read .*delete .*latest.pt"):
        train_ddpm(tiny_unet(), good, ddpm_scheduler(), TrainingPlan(1, 2, 1e-3, 1), folder, torch.Generator())
    torch.save({"fingerprint": "x", "model": {}}, latest)
    with pytest.raises(CheckpointError, match="without epoch, optimiser, generator"):
        train_ddpm(tiny_unet(), good, ddpm_scheduler(), TrainingPlan(1, 2, 1e-3, 1), folder, torch.Generator())
