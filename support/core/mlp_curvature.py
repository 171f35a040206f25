"""Eq (19)'s two derivatives of an MLP's squared-error loss, by hand, for S curves at once.

The geodesic equation of the Monge metric (eq 19),

    alpha'' = - (alpha'^T H alpha') / (1 + ||grad L||^2) * grad L,

needs the gradient and one number of the Hessian, the second directional derivative
s = v^T H v = d^2/dt^2 L(theta + t v) at t = 0, not the vector H v that a generic HVP returns.
For a multilayer perceptron f_theta with a squared-error loss

    L(theta) = (1/N) sum_n ||f_theta(x_n) - y_n||^2

both come from one forward pass that also carries the tangent (a_l' for every pre-activation a_l)
and one backward pass for the gradient, because the second-order part of s is an inner product
with the backward pass's own adjoints (the adjoint trick):

    s = (2/N) sum_n ||f'_n||^2 + sum_n delta_n . f''_n,   delta_n = (2/N)(f_n - y_n),
    delta . f'' = sum_l [ 2 <V_l, delta_{a_l}^T h'_{l-1}> + delta_{h_l} . sigma''(a_l) (a_l')^2 ],

where V_l is the tangent of W_l, h_l = sigma(a_l) and delta_{a_l}, delta_{h_l} are the gradient's
adjoints. That is six matrix products per layer where the gradient takes three (forward, and the
two of the backward pass), so the right-hand side costs about 2x a gradient in arithmetic. A
double-backward HVP costs about three gradients and then throws away all of H v but one
number. The products are batched over the S curves (``torch.bmm``), so no ``vmap`` is needed.

:class:`MLPRegressionLoss` is also an ordinary loss function of a flat theta [K] (its ``__call__``),
so every generic path (``torch.func`` gradients, HVPs, Lanczos) works on the same object.
``tests/test_mlp_curvature.py`` checks both derivatives against ``torch.func`` on the
``nn.Sequential`` itself and against finite differences; ``benchmarks/mlp_curvature.py`` measures them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

Activation = tuple[Callable[[torch.Tensor], torch.Tensor],
                   Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]


def _silu_first(a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    sigmoid = torch.sigmoid(a)
    return sigmoid * (1 + a * (1 - sigmoid))


def _silu_second(a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    sigmoid = torch.sigmoid(a)
    return sigmoid * (1 - sigmoid) * (2 + a * (1 - 2 * sigmoid))


ACTIVATIONS: dict[type[nn.Module], Activation] = {
    nn.Tanh: (torch.tanh, lambda a, h: 1 - h * h, lambda a, h: -2 * h * (1 - h * h)),
    nn.SiLU: (nn.functional.silu, _silu_first, _silu_second),
}
"""sigma, sigma'(a, sigma(a)) and sigma''(a, sigma(a)) of each supported activation module."""


@dataclass(frozen=True)
class MLPRegressionLoss:
    """L(theta) = (1/N) sum_n ||f_theta(x_n) - y_n||^2 for an MLP f (Linear, sigma, ..., Linear).

    theta packs every layer's weight [out, in] and bias [out], layer by layer, in the order of
    ``nn.Sequential.parameters()`` (so :func:`support.core.parameters.flatten` of the network gives it).
    """

    widths: tuple[int, ...]
    """Input width, hidden widths and output width."""
    activation: type[nn.Module]
    inputs: torch.Tensor
    """x [N, widths[0]]."""
    targets: torch.Tensor
    """y [N, widths[-1]]."""

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation.__name__} has no derivatives here; "
                             f"use one of {[a.__name__ for a in ACTIVATIONS]}")
        if len(self.widths) < 2 or min(self.widths) < 1:
            raise ValueError(f"widths must hold at least an input and an output width, all positive; got {self.widths}")
        n = len(self.inputs)
        if self.inputs.shape != (n, self.widths[0]) or self.targets.shape != (n, self.widths[-1]) or n == 0:
            raise ValueError(f"inputs must have shape [N, {self.widths[0]}] and targets [N, {self.widths[-1]}] with "
                             f"N >= 1; got {tuple(self.inputs.shape)} and {tuple(self.targets.shape)}")

    @classmethod
    def from_sequential(cls, net: nn.Sequential, inputs: torch.Tensor, targets: torch.Tensor) -> MLPRegressionLoss:
        """The loss of ``net`` = Linear, sigma, Linear, ..., sigma, Linear (one activation type, biases on)."""
        layers = list(net)
        linears, activations = layers[0::2], layers[1::2]
        kinds = {type(a) for a in activations}
        if (len(layers) % 2 == 0 or not all(isinstance(m, nn.Linear) and m.bias is not None for m in linears)
                or len(kinds) > 1):
            raise ValueError(f"need nn.Sequential(Linear, activation, ..., Linear) with biases and one activation "
                             f"type; got {[type(m).__name__ for m in layers]}")
        widths = (linears[0].in_features, *(m.out_features for m in linears))
        if any(m.in_features != w for m, w in zip(linears, widths)):
            raise ValueError(f"consecutive Linear layers do not fit together: {[tuple(m.weight.shape) for m in linears]}")
        return cls(widths, kinds.pop() if kinds else nn.Tanh, inputs, targets)

    @property
    def dim(self) -> int:
        """K, the number of parameters."""
        return sum(o * i + o for i, o in zip(self.widths[:-1], self.widths[1:]))

    def _layers(self, flat: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(W [S, out, in], b [S, out]) per layer from flat [S, K]."""
        layers, start = [], 0
        for i, o in zip(self.widths[:-1], self.widths[1:]):
            layers.append((flat[:, start: start + o * i].reshape(-1, o, i), flat[:, start + o * i: start + o * i + o]))
            start += o * i + o
        return layers

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        """L(theta) for theta [K] (differentiable, so generic gradients and HVPs apply)."""
        if theta.shape != (self.dim,):
            raise ValueError(f"theta must have shape [{self.dim}], got {tuple(theta.shape)}")
        sigma = ACTIVATIONS[self.activation][0]
        h = self.inputs
        layers = self._layers(theta[None])
        for depth, (weight, bias) in enumerate(layers):
            h = torch.addmm(bias[0], h, weight[0].T)
            if depth < len(layers) - 1:
                h = sigma(h)
        return (h - self.targets).square().sum(dim=1).mean()

    def gradient_and_curvature(self, theta: torch.Tensor, velocity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(grad L(theta_s) [S, K], v_s^T H(theta_s) v_s [S]) for theta and velocity [S, K], one pass (eq 19)."""
        if theta.ndim != 2 or theta.shape[1] != self.dim or velocity.shape != theta.shape:
            raise ValueError(f"theta and velocity must both have shape [S, {self.dim}]; got {tuple(theta.shape)} "
                             f"and {tuple(velocity.shape)}")
        sigma, first, second = ACTIVATIONS[self.activation]
        params, tangents = self._layers(theta), self._layers(velocity)
        n = len(self.inputs)
        h, h_dot = self.inputs.expand(len(theta), *self.inputs.shape), None
        inputs_of_layer, hidden = [], []  # (h_{l-1}, h'_{l-1}) per layer; (a_l, a_l', h_l, sigma'(a_l)) per hidden layer
        for depth, ((weight, bias), (weight_dot, bias_dot)) in enumerate(zip(params, tangents)):
            inputs_of_layer.append((h, h_dot))
            a = torch.baddbmm(bias[:, None], h, weight.transpose(1, 2))
            a_dot = torch.baddbmm(bias_dot[:, None], h, weight_dot.transpose(1, 2))
            if h_dot is not None:
                a_dot = a_dot.baddbmm(h_dot, weight.transpose(1, 2))
            if depth < len(params) - 1:
                h = sigma(a)
                slope = first(a, h)
                h_dot = slope * a_dot
                hidden.append((a, a_dot, h, slope))
        delta = (2.0 / n) * (a - self.targets)  # dL/df, [S, N, out]
        curvature = (2.0 / n) * a_dot.square().sum(dim=(1, 2))
        gradients: list[torch.Tensor] = []
        for depth in range(len(params) - 1, -1, -1):
            h_in, h_in_dot = inputs_of_layer[depth]
            gradients[:0] = [torch.bmm(delta.transpose(1, 2), h_in).flatten(1), delta.sum(dim=1)]
            if depth == 0:
                break
            weight, weight_dot = params[depth][0], tangents[depth][0]
            curvature = curvature + 2 * (torch.bmm(delta.transpose(1, 2), h_in_dot) * weight_dot).sum(dim=(1, 2))
            delta_h = torch.bmm(delta, weight)
            a, a_dot, h, slope = hidden[depth - 1]
            curvature = curvature + (delta_h * second(a, h) * a_dot.square()).sum(dim=(1, 2))
            delta = delta_h * slope
        return torch.cat(gradients, dim=1), curvature
