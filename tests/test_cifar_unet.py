"""The CIFAR-10 U-Net: the published architecture, and Hessian-vector products through it."""

import pytest
import torch
from diffusers import UNet2DModel
from diffusers.models.attention_processor import Attention
from torch.func import grad, jvp, vjp

from support.core.laplace import hessian_vector_product
from support.core.monge_metric import SummedLoss, geodesic_acceleration, gradient_and_hvp, loss_gradient
from support.models.cifar_unet import (
    build_unet,
    ddpm_cifar10_config,
    ddpm_scheduler,
    draw_fixed_batch,
    fixed_batch_loss,
    make_twice_differentiable,
    smoke_unet_config,
)


def test_the_paper_architecture_has_the_published_size():
    unet = UNet2DModel(**ddpm_cifar10_config())
    assert sum(p.numel() for p in unet.parameters()) == 35_746_307
    assert sum(p.numel() for p in unet.conv_in.parameters()) == 3_584
    # google/ddpm-cifar10-32's config has attention_head_dim null: one head over all 256 channels, as in
    # Ho et al.'s DDPM. diffusers' default (8) would give 32 heads with the same parameter count.
    attentions = [m for m in unet.modules() if isinstance(m, Attention)]
    assert [(m.heads, m.inner_dim) for m in attentions] == [(1, 256)] * 6


def test_the_scheduler_is_the_linear_1000_step_ddpm_schedule():
    scheduler = ddpm_scheduler()
    assert scheduler.config.num_train_timesteps == 1000
    assert torch.allclose(scheduler.betas[[0, -1]], torch.tensor([1e-4, 0.02], dtype=scheduler.betas.dtype))


@pytest.fixture(scope="module")
def smoke_loss():
    torch.manual_seed(0)
    unet = build_unet(smoke_unet_config()).double()
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 32, 32, generator=generator, dtype=torch.float64) * 2 - 1
    batch = draw_fixed_batch(images, ddpm_scheduler(), generator)
    return unet, batch, *fixed_batch_loss(unet, batch, ddpm_scheduler())


def test_the_plain_attention_processor_changes_no_output(smoke_loss):
    unet, batch, *_ = smoke_loss
    torch.manual_seed(0)
    stock = UNet2DModel(**smoke_unet_config()).double()  # same seed, default attention processor
    x, t = batch.images, batch.timesteps
    with torch.no_grad():  # the two attention kernels differ by 4e-8 here (float64), far below float32 rounding
        assert torch.allclose(stock(x, t).sample, unet(x, t).sample, atol=1e-6)


def test_the_loss_is_a_function_of_conv_in_only(smoke_loss):
    unet, batch, theta, loss, layout = smoke_loss
    assert layout.names == ("conv_in.weight", "conv_in.bias") and theta.numel() == 16 * 3 * 9 + 16 == 448
    assert loss(theta).item() == pytest.approx(
        (unet(ddpm_scheduler().add_noise(batch.images, batch.noise, batch.timesteps), batch.timesteps).sample
         - batch.noise).square().mean().item(), rel=1e-12)


def test_hessian_vector_products_agree_forward_reverse_and_finite_differences(smoke_loss):
    _, _, theta, loss, _ = smoke_loss
    v = torch.randn(theta.shape, generator=torch.Generator().manual_seed(2), dtype=theta.dtype)
    forward = jvp(grad(loss), (theta,), (v,))[1]
    reverse = vjp(grad(loss), theta)[1](v)[0]
    h = 1e-4
    central = (grad(loss)(theta + h * v) - grad(loss)(theta - h * v)) / (2 * h)
    # measured: |forward - reverse| 4e-9, |central - reverse| 7e-6 (O(h^2)), against max |Hv| = 0.42
    assert (forward - reverse).abs().max() < 1e-7
    assert (central - reverse).abs().max() < 5e-5


def test_make_twice_differentiable_is_idempotent():
    unet = make_twice_differentiable(build_unet(smoke_unet_config()))
    hooks = [len(m._forward_pre_hooks) for m in unet.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert hooks and set(hooks) == {1}


def test_a_fixed_batch_needs_image_shaped_input():
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        draw_fixed_batch(torch.zeros(3, 32, 32), ddpm_scheduler(), torch.Generator())


def test_micro_batches_give_the_same_loss_gradient_hvp_and_geodesic_acceleration():
    """A SummedLoss of micro-batches against the whole batch (the oracle), in every function that splits it."""
    torch.manual_seed(0)
    unet = make_twice_differentiable(build_unet(smoke_unet_config()).double())
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(5, 3, 32, 32, generator=generator, dtype=torch.float64) * 2 - 1
    batch = draw_fixed_batch(images, ddpm_scheduler(), generator)
    theta, whole, _ = fixed_batch_loss(unet, batch, ddpm_scheduler())
    _, split, _ = fixed_batch_loss(unet, batch, ddpm_scheduler(), micro_batch=2)
    assert isinstance(split, SummedLoss) and split.weights == (0.4, 0.4, 0.2)  # parts of 2, 2 and 1 images
    v = torch.randn(2, theta.numel(), generator=generator, dtype=torch.float64)
    assert split(theta).item() == pytest.approx(whole(theta).item(), rel=1e-12)

    def close(got: torch.Tensor, want: torch.Tensor) -> bool:
        # The U-Net's own float64 output already differs by ~1e-10 between a batch of 5 and batches
        # of 2, 2, 1 (CPU kernels, measured); gradients and HVPs then differ by up to 7e-9 of their size.
        return bool((got - want).abs().max() <= 1e-7 * want.abs().max())

    assert close(loss_gradient(split, theta), grad(whole)(theta))
    for mode in ("forward", "reverse"):
        for got, want in zip(gradient_and_hvp(split, theta, v[0], mode), gradient_and_hvp(whole, theta, v[0], mode)):
            assert close(got, want)
        assert close(hessian_vector_product(split, theta, mode)(v[1]), hessian_vector_product(whole, theta, mode)(v[1]))
    thetas = theta + 0.01 * v  # two curves at once: the vmapped path
    assert close(geodesic_acceleration(split, thetas, v, "reverse"), geodesic_acceleration(whole, thetas, v, "reverse"))
    with pytest.raises(ValueError, match="micro_batch must be positive"):
        fixed_batch_loss(unet, batch, ddpm_scheduler(), micro_batch=0)
