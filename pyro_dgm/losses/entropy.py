r"""Pixyz's module ``pixyz.losses.entropy``: entropies and the cross-entropy (see :mod:`.divergences`).

Examples
--------
>>> import math, torch
>>> from pyro_dgm.distributions import Normal
>>> h = AnalyticalEntropy(Normal(loc=0., scale=1., var=["x"]))
>>> print(h)
H \left[ {p(x)} \right]
>>> bool(torch.allclose(h.eval(), torch.tensor([0.5 * (1 + math.log(2 * math.pi))])))
True
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pyro_dgm.losses.base import Loss
from pyro_dgm.losses.divergences import AnalyticalEntropy, CrossEntropy, Entropy, KullbackLeibler
from pyro_dgm.losses.expectation import StochasticReconstructionLoss

if TYPE_CHECKING:  # pragma: no cover
    from pyro_dgm.distributions.base import Distribution

__all__ = ["Entropy", "AnalyticalEntropy", "CrossEntropy", "StochasticReconstructionLoss", "Loss", "KullbackLeibler"]
