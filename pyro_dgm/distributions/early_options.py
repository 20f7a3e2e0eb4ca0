"""The early API reference's sampling keywords, ``sample(x, shape=None, batch_size=1)``, read as Pixyz 0.3.3's
``sample_shape``/``batch_n``.

The early reference (the seeds' ``002``) documents ``batch_size`` as the batch size of the samples (1 by default) and
``shape`` as the shape of the samples ("if set, batch_size and dim are ignored"): the batch dims followed by the
features (the reference's ``dim``). Pixyz 0.3.3 has neither name: it passes unknown keywords on to the networks'
``forward``, and ignores those that no network takes. So a keyword keeps its 0.3.3 meaning wherever 0.3.3 gives it
one, and takes the early one elsewhere:

- a network (a distribution's ``forward``) that names ``shape`` or ``batch_size`` as a parameter gets it, as under
  Pixyz 0.3.3, and the keyword sets nothing else;
- inside a loss's evaluation (``loss.eval(x, batch_size=...)``, ``Model.train(x, batch_size=...)``) the keywords are
  ``eval``'s options and pass on as Pixyz 0.3.3 passes them (ignored unless a network takes them);
- given with the 0.3.3 option it stands for (``batch_n``; ``sample_shape`` or ``batch_n`` for ``shape``), the 0.3.3
  option wins and the early keyword is ignored, as under 0.3.3.

Otherwise ``batch_size=n`` is ``batch_n=n``, and ``shape=(*S, B, *F)``, where ``F`` is the features shape of the
factors drawn without inputs, is ``sample_shape=S, batch_n=B``; a shape that does not end with ``F`` (or a
distribution whose every factor has inputs, so that its batch comes from them) is a ``ValueError``, and so is a draw
whose shape is not ``shape`` (a network that gives other features than ``features_shape``).

Examples
--------
>>> import torch
>>> from pyro_dgm.distributions import Normal
>>> p = Normal(loc=torch.zeros(4), scale=1., var=["z"])
>>> tuple(p.sample(batch_size=3)["z"].shape), tuple(p.sample(shape=(2, 3, 4))["z"].shape)
((3, 4), (2, 3, 4))
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import torch

from pyro_dgm.distributions.bindings import forward_extras
from pyro_dgm.utils.checks import ShapeError, describe

if TYPE_CHECKING:  # pragma: no cover
    from pyro_dgm.distributions.base import Distribution

__all__ = ["EARLY_SAMPLING_KEYWORDS", "early_sampling_options", "check_early_shape"]

#: The early reference's keywords of ``sample`` that Pixyz 0.3.3 names otherwise (``sample_shape``, ``batch_n``).
EARLY_SAMPLING_KEYWORDS = frozenset({"shape", "batch_size"})

#: What :func:`check_early_shape` checks after the draw: the variables drawn without inputs, the shape asked for.
Expected = tuple[tuple[str, ...], torch.Size]


def _taken_by_a_network(dist: "Distribution", name: str) -> bool:
    """Whether the ``forward`` of a distribution in ``dist`` (its factors, their experts, priors, components) names
    ``name`` as a parameter: Pixyz 0.3.3 passes the keyword to it."""
    from pyro_dgm.distributions.base import Distribution

    return any(forward_extras(m, {name: None}) for m in dist.modules() if isinstance(m, Distribution))


def early_sampling_options(dist: "Distribution", batch_n: Any, sample_shape: Any, kwargs: Mapping[str, Any]
                           ) -> tuple[Any, Any, Mapping[str, Any], Expected | None]:
    """``(batch_n, sample_shape, kwargs, expected)`` of a ``dist.sample(...)`` call whose ``kwargs`` hold ``shape``
    or ``batch_size`` (see the module's rules); ``expected`` is what :func:`check_early_shape` checks after the draw
    (``None`` when ``shape`` set nothing).

    Examples
    --------
    >>> from pyro_dgm.distributions import Normal
    >>> p = Normal(loc=0., scale=1., var=["x"])
    >>> early_sampling_options(p, None, torch.Size(), {"shape": (2, 3)})
    (3, torch.Size([2]), {}, (('x',), torch.Size([2, 3])))
    >>> early_sampling_options(p, 5, torch.Size(), {"batch_size": 3})  # Pixyz 0.3.3's batch_n wins
    (5, torch.Size([]), {}, None)
    """
    from pyro_dgm.losses.context import current_context  # (the losses' layer, read only here)

    if current_context() is not None:  # eval's options, passed on as Pixyz 0.3.3 passes them
        return batch_n, sample_shape, kwargs, None
    kwargs = dict(kwargs)
    # a network's keyword stays in kwargs, for the network (Pixyz 0.3.3); the others are the early options
    early = {k: kwargs.pop(k) for k in sorted(EARLY_SAMPLING_KEYWORDS) if k in kwargs
             and not _taken_by_a_network(dist, k)}
    batch_size, shape = early.get("batch_size"), early.get("shape")
    modern_given = batch_n is not None or len(sample_shape) > 0
    if shape is not None and not modern_given:
        sample_shape, batch_n, expected = _split_shape(dist, shape)
        return batch_n, sample_shape, kwargs, expected
    if batch_size is not None and batch_n is None:
        batch_n = batch_size
    return batch_n, sample_shape, kwargs, None


def _split_shape(dist: "Distribution", shape: Any) -> tuple[torch.Size, int, Expected]:
    """``(sample_shape, batch_n, expected)`` for the early ``shape``: ``(*sample_shape, batch_n, *features)``."""
    try:
        full = torch.Size(shape)
    except TypeError:
        raise TypeError(f"{describe(dist)}: shape must be a tuple of ints (the early reference's shape of the "
                        f"samples, batch dims then features), got {shape!r}") from None
    roots = [f for f in dist._dgm_order if not f._dgm_binding.cond_var]
    if not roots:
        raise ValueError(f"{describe(dist)}: shape={tuple(full)} (the early reference's shape of the samples) sets "
                         f"the batch of a draw without inputs, but every factor of {dist.prob_text} has inputs, whose "
                         f"batch the draw takes; give sample_shape= for more draws per input")
    features = {tuple(f.features_shape) for f in roots}
    if len(features) != 1:
        raise ValueError(f"{describe(dist)}: shape={tuple(full)} (the early reference's shape of the samples) is "
                         f"ambiguous: the factors drawn without inputs have the features shapes "
                         f"{sorted(features)}; give batch_n= and sample_shape= instead")
    feat = torch.Size(next(iter(features)))
    n = len(feat)
    if len(full) <= n or tuple(full[len(full) - n:]) != tuple(feat):
        raise ValueError(f"{describe(dist)}: shape={tuple(full)} is the early reference's shape of the samples, "
                         f"batch dims then the features {tuple(feat)}: give (batch, *{tuple(feat)}), e.g. "
                         f"shape={(3, *feat)}, or batch_n=/sample_shape=")
    lead = full[:len(full) - n]
    names = tuple(v for f in roots for v in f._dgm_binding.var)
    return torch.Size(lead[:-1]), int(lead[-1]), (names, full)


def check_early_shape(dist: "Distribution", values: Mapping[str, Any], expected: Expected) -> None:
    """Check that the variables drawn without inputs have the early ``shape`` asked for.

    Raises
    ------
    ShapeError
        Naming the variable and its shape (a network giving other features than the factor's ``features_shape``).

    Examples
    --------
    >>> from pyro_dgm.distributions import Normal
    >>> p = Normal(loc=0., scale=1., var=["x"])
    >>> check_early_shape(p, {"x": torch.zeros(2, 3)}, (("x",), torch.Size([2, 3])))
    >>> check_early_shape(p, {"x": torch.zeros(2, 3, 1)}, (("x",), torch.Size([2, 3])))
    Traceback (most recent call last):
     ...
    pyro_dgm.utils.checks.ShapeError: Normal p(x): sample(shape=(2, 3)) drew 'x' of shape (2, 3, 1); ...
    """
    names, full = expected
    for v in names:
        value = values.get(v)
        if isinstance(value, torch.Tensor) and value.shape != full:
            raise ShapeError(f"{describe(dist)}: sample(shape={tuple(full)}) drew {v!r} of shape "
                             f"{tuple(value.shape)}; the early reference's shape is the batch dims then the features, "
                             f"read from features_shape: give the factor's features_shape, or use batch_n=/"
                             f"sample_shape=")
