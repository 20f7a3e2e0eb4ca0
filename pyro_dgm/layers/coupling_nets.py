r"""Small networks for coupling layers: an :class:`MLP` and :class:`ScaleTranslate`, which splits a network's output
into a bounded log-scale and a translation (:class:`~pyro_dgm.flows.AffineCoupling`'s ``scale_translate_net``)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["MLP", "ScaleTranslate"]


class MLP(nn.Sequential):
    """A ReLU multilayer perceptron; with ``zero_last`` its output starts at 0 (a coupling starts as the identity).

    Examples
    --------
    >>> net = MLP(2, 16, 4)
    >>> net(torch.randn(3, 2)).abs().max().item()
    0.0
    """

    def __init__(self, in_features: int, hidden_features: int, out_features: int, num_hidden: int = 2,
                 zero_last: bool = True) -> None:
        layers: list[nn.Module] = []
        n = in_features
        for _ in range(num_hidden):
            layers += [nn.Linear(n, hidden_features), nn.ReLU()]
            n = hidden_features
        last = nn.Linear(n, out_features)
        if zero_last:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        super().__init__(*layers, last)


class ScaleTranslate(nn.Module):
    r"""Wrap a network whose output has twice the input's features (dim ``-event_dim``) into ``(log_s, t)`` with
    :math:`\log s = a \odot \tanh(\cdot)` for a learned :math:`a` (initially 1), as Real NVP bounds its scales.

    Parameters
    ----------
    net : nn.Module
        Called as ``net(x)`` or ``net(x, y)`` (context).
    features : int
        Features (``event_dim=1``) or channels (``event_dim=3``) of the input.
    event_dim : {1, 3}

    Examples
    --------
    >>> st = ScaleTranslate(MLP(4, 8, 8), features=4)
    >>> log_s, t = st(torch.randn(2, 4))
    >>> tuple(log_s.shape), tuple(t.shape)
    ((2, 4), (2, 4))
    """

    def __init__(self, net: nn.Module, features: int, event_dim: int = 1) -> None:
        super().__init__()
        self.net = net
        self.event_dim = event_dim
        self.log_scale_bound = nn.Parameter(torch.ones(features, *([1] * (event_dim - 1))))

    def forward(self, x: Tensor, *context: Any) -> tuple[Tensor, Tensor]:
        s, t = self.net(x, *context).chunk(2, dim=-self.event_dim)
        return self.log_scale_bound * torch.tanh(s), t
