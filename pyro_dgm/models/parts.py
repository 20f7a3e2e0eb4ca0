"""What the ready-made models (``ML``, ``VAE``, ``VI``) check before they build their loss."""
from __future__ import annotations

from typing import Any

from torch import nn

from pyro_dgm.distributions.base import Distribution
from pyro_dgm.losses.pdf import check_distribution
from pyro_dgm.models.model import check_distributions

__all__ = ["model_distributions"]


def model_distributions(owner: str, other_distributions: Any, **named: Distribution) -> list[nn.Module]:
    """Check each named distribution and ``other_distributions``; return them all, the named ones first.

    Parameters
    ----------
    owner : str
        The model's name, for the error messages.
    other_distributions : list of Distribution or nn.Module, or None
        The extra distributions (or plain networks) the model also trains.
    **named : Distribution
        The model's own distributions, by argument name.

    Examples
    --------
    >>> from pyro_dgm.distributions import Normal
    >>> p = Normal(loc=0., scale=1., var=["x"])
    >>> [d.prob_text for d in model_distributions("ML", [], p=p)]
    ['p(x)']
    >>> model_distributions("ML", None, p="not a distribution")
    Traceback (most recent call last):
    ...
    pyro_dgm.utils.checks.ArgumentError: ML: p must be a pyro_dgm Distribution, got str
    """
    for what, d in named.items():
        check_distribution(d, owner, what)
    if other_distributions is None:  # Pixyz's tolist(None) is [None]: an entry that trains nothing, printed as None
        return [*named.values(), None]
    return list(named.values()) + check_distributions(owner, other_distributions)
