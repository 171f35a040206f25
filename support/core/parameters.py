"""Losses as functions of a flat parameter vector, for any subset of a module's parameters.

The geometry (eq 19), the Hessian and the Laplace samplers all act on a flat theta in R^K. This
module turns an ``nn.Module`` plus a loss on its forward function into such a function, with any
selection of named parameters as theta (e.g. only ``conv_in`` of a U-Net, App. D) and the rest
frozen at their current values, using ``torch.func.functional_call`` so that ``torch.func``
transforms (grad, jvp, vmap) work on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

Forward = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class ParameterLayout:
    """Names, shapes and offsets of the parameters packed into a flat theta."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(torch.Size(s).numel()) for s in self.shapes)

    @property
    def dim(self) -> int:
        return sum(self.sizes)

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split theta [K] into named tensors (views, differentiable)."""
        if theta.shape != (self.dim,):
            raise ValueError(f"theta must have shape [{self.dim}], got {tuple(theta.shape)}")
        return {n: p.view(s) for n, p, s in zip(self.names, theta.split(self.sizes), self.shapes)}


def select_parameters(model: nn.Module, names: Sequence[str] | None = None) -> ParameterLayout:
    """Layout of the named parameters (all parameters if ``names`` is None).

    A name may be a parameter name (``"net.0.weight"``) or a module prefix (``"conv_in"``
    selects ``conv_in.weight`` and ``conv_in.bias``).
    """
    all_params = dict(model.named_parameters())
    if names is None:
        chosen = list(all_params)
    else:
        chosen = []
        for name in names:
            matches = [p for p in all_params if p == name or p.startswith(name + ".")]
            if not matches:
                raise KeyError(f"no parameter or module named {name!r}; e.g. {list(all_params)[:5]}")
            chosen += [m for m in matches if m not in chosen]
    return ParameterLayout(tuple(chosen), tuple(all_params[n].shape for n in chosen))


def flatten(model: nn.Module, layout: ParameterLayout) -> torch.Tensor:
    """The current values of the layout's parameters as one detached flat tensor [K]."""
    params = dict(model.named_parameters())
    return torch.cat([params[n].detach().reshape(-1) for n in layout.names])


def functional_forward(model: nn.Module, layout: ParameterLayout, theta: torch.Tensor) -> Forward:
    """The model's forward with the layout's parameters replaced by ``theta`` (others frozen)."""
    frozen = {n: p.detach() for n, p in model.named_parameters() if n not in layout.names}
    buffers = dict(model.named_buffers())

    def forward(*args, **kwargs):
        state = {**frozen, **buffers, **layout.unflatten(theta)}
        return functional_call(model, state, args, kwargs)

    return forward


def parameter_loss(
    model: nn.Module,
    loss_of_forward: Callable[[Forward], torch.Tensor],
    names: Sequence[str] | None = None,
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor], ParameterLayout]:
    """Flat parameters theta (current values) and a closure ``loss(theta)`` with the rest frozen.

    ``loss_of_forward(f)`` must compute the loss from a forward function ``f`` with the model's
    signature, e.g. ``lambda f: flow_matching_loss(f, data)``.
    """
    layout = select_parameters(model, names)
    theta = flatten(model, layout)

    def loss(theta: torch.Tensor) -> torch.Tensor:
        return loss_of_forward(functional_forward(model, layout, theta))

    return theta, loss, layout
