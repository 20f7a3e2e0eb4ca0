r"""The state of one loss evaluation: :class:`EvalContext`, built once by the outermost :meth:`Loss.eval
<pyro_dgm.losses.base.Loss.eval>` and passed down to every term it evaluates.

An evaluation holds three things: the memoizing scope (each network runs once per inputs), the recorder of the terms'
values (``eval(..., return_terms=True)``) and the options the caller gave ``eval``, split once by whom they are
for: the samplers of the terms that draw (``batch_n``, ``sample_shape``...), the loss terms that own an option
(:class:`~pyro_dgm.losses.iteration.IterativeLoss`'s ``mask``) and the networks (the rest, Pixyz semantics: extra
keywords reach the networks' ``forward`` that take them).

Nothing here is module-global mutable state. The one thread-local is :func:`current_context`: a Pixyz-style term
evaluates its operands by calling their public ``eval`` from inside its own ``forward(x_dict, **kwargs)`` (a
signature user subclasses keep), so that nested ``eval`` finds the evaluation it belongs to (the same memoizing scope,
the same recorder) through this thread's current context rather than through an argument ``forward`` cannot take.
Two threads evaluating losses at once each have their own context.

Examples
--------
>>> ctx = EvalContext.build({"mask": [1, 0], "batch_n": 3, "dropout": False}, record=True)
>>> ctx.term_options, ctx.sampler_options, ctx.network_options
({'mask': [1, 0]}, {'batch_n': 3, 'dropout': False}, {'dropout': False})
>>> ctx.recorder
{}
>>> current_context() is None  # no evaluation in progress in this thread
True
"""
from __future__ import annotations

import threading
from typing import Any, Mapping

from pyro_dgm.distributions.bindings import SAMPLING_OPTIONS
from pyro_dgm.poutine.memoize_messenger import MemoizeMessenger, MissLog

__all__ = ["EvalContext", "current_context", "TERM_OPTIONS", "SAMPLER_OPTIONS", "sampler_options"]

#: Options of ``eval`` that belong to loss terms (:class:`~pyro_dgm.losses.iteration.IterativeLoss`'s ``mask``):
#: never given to a sampler or a network.
TERM_OPTIONS = frozenset({"mask"})
#: Options of ``eval`` that belong to the samplers of the terms that draw (the keywords of
#: :meth:`Distribution.sample <pyro_dgm.distributions.Distribution.sample>`): never given to a network.
SAMPLER_OPTIONS = SAMPLING_OPTIONS

_EMPTY: Mapping[str, Any] = {}


class _Current(threading.local):
    ctx: "EvalContext | None"

    def __init__(self) -> None:  # runs once in each thread that touches it; an instance attribute from the start,
        self.ctx = None  # so torch.compile's guards see the same attribute layout before and after an evaluation


_CURRENT = _Current()


def current_context() -> "EvalContext | None":
    """The evaluation in progress in this thread (``None`` outside ``Loss.eval``)."""
    return _CURRENT.ctx


def sampler_options(options: Mapping[str, Any]) -> Mapping[str, Any]:
    """``options`` without the loss terms' own options: what a term that draws passes to its sampler.

    Examples
    --------
    >>> sampler_options({"mask": 1, "sample_shape": [2]})
    {'sample_shape': [2]}
    """
    if not options:
        return options
    for k in options:
        if k in TERM_OPTIONS:
            return {k: v for k, v in options.items() if k not in TERM_OPTIONS}
    return options


class EvalContext:
    """One evaluation: its memoizing scope, its term recorder and its options split by consumer.

    Built by :meth:`build` (the outermost ``Loss.eval`` calls it once), entered with ``with`` (which opens the
    memoizing scope and makes it this thread's :func:`current_context`).

    Attributes
    ----------
    recorder : dict or None
        ``id(loss node) -> value`` of each node evaluated, when terms were asked for (``return_terms=True``).
    memo : MemoizeMessenger
        The memoizing scope of the evaluation (this thread's only; it is not put on Pyro's global handler stack).
    options : dict
        Every keyword given to ``eval``.
    term_options, sampler_options, network_options : dict
        ``options`` split by consumer: the loss terms' (``mask``), what samplers take (everything but the terms'),
        what networks take (everything but the terms' and the samplers' own).
    """

    __slots__ = ("recorder", "memo", "options", "term_options", "sampler_options", "network_options", "_outer")

    def __init__(self, recorder: dict[int, Any] | None, memo: MemoizeMessenger | None, options: Mapping[str, Any],
                 term_options: Mapping[str, Any], sampler_options: Mapping[str, Any],
                 network_options: Mapping[str, Any]) -> None:
        self.recorder = recorder
        self.memo = memo
        self.options = options
        self.term_options = term_options
        self.sampler_options = sampler_options
        self.network_options = network_options
        self._outer: EvalContext | None = None

    @classmethod
    def build(cls, options: Mapping[str, Any], record: bool, misses: MissLog | None = None) -> "EvalContext":
        """The context of an evaluation given the keywords of ``eval`` (split here, once); ``misses``: the loss's
        :class:`~pyro_dgm.poutine.memoize_messenger.MissLog` for its memoizing scope."""
        memo = MemoizeMessenger(pyro_stack=False, misses=misses)
        if not options:
            return cls({} if record else None, memo, _EMPTY, _EMPTY, _EMPTY, _EMPTY)
        term = {k: v for k, v in options.items() if k in TERM_OPTIONS}
        sampler = {k: v for k, v in options.items() if k not in TERM_OPTIONS} if term else dict(options)
        network = {k: v for k, v in sampler.items() if k not in SAMPLER_OPTIONS}
        return cls({} if record else None, memo, dict(options), term, sampler, network)

    def with_recorder(self) -> "EvalContext":
        """The same evaluation (memoizing scope, options) with a recorder of its own: a nested
        ``eval(..., return_terms=True)`` inside a term's ``forward``."""
        return EvalContext({}, None, self.options, self.term_options, self.sampler_options, self.network_options)

    def __enter__(self) -> "EvalContext":
        self._outer = _CURRENT.ctx
        if self.memo is not None:
            self.memo.__enter__()
        _CURRENT.ctx = self
        return self

    def __exit__(self, *exc: Any) -> None:
        _CURRENT.ctx = self._outer
        self._outer = None
        if self.memo is not None:
            self.memo.__exit__(*exc)
