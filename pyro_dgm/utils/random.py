r"""Reproducible draws per thread: pyro_dgm's random numbers from a ``torch.Generator`` of your own.

By default every draw pyro_dgm makes (sampling a distribution, the reparameterized draws of a loss, the shuffles and
interpolations some losses make) uses torch's default generator, which is one per process: two threads that draw
get numbers in the order they ask, so neither is reproducible. Within ``with generator(g):`` the draws this thread
makes come from ``g`` instead, so a thread's numbers depend on its own seed only::

    with generator(torch.Generator().manual_seed(0)):
        model.train({"x": x})

How each draw honours it:

* the closed-form reparameterized Normal draw (:mod:`pyro_dgm.distributions.closed_forms`) and the losses' own
  draws pass ``generator=`` to torch's samplers;
* every other draw (the general path of every family, flows, mixtures, ``get_sample``) calls the distribution's own
  sampler under :class:`seeded_draws`, a thread-local ``TorchDispatchMode`` that gives ``g`` to each random torch
  operation of the sampler (``normal_``, ``rand``, ``bernoulli``, ``multinomial``, ``_standard_gamma``,
  ``_sample_dirichlet``, ``binomial``, ``poisson``, ``randperm``...). A draw inside Pyro stays a ``pyro.sample``
  site with the family's own distribution object: handlers see it as they do without a generator.

So every family of pyro_dgm samples under a generator (Normal, Bernoulli, Categorical, Gamma, Beta, Dirichlet,
Laplace, relaxed families, Multinomial...), and so does a user's family built on ``torch.distributions``. A sampler
that calls a random torch operation that takes no generator (dropout, recurrent layers with dropout, fused attention
with dropout) raises :class:`NotImplementedError` naming the distribution, its family and the operation: it never
silently uses the default generator. Not covered: randomness outside torch (numpy, Python's ``random``) and the
random operations that user code runs itself, in a network's ``forward`` for instance (pass
``generator=current_generator()`` to them; dropout cannot take one).

With no generator active nothing changes: the draws use torch's default generator, the same numbers as before (one
thread-local attribute read per draw). The generator must live on the device of the draws (a CUDA generator,
``torch.Generator("cuda")``, for a model on the GPU). It is per thread: a thread started inside the block uses the
default generator until it enters a block of its own.
"""
from __future__ import annotations

import threading
from typing import Any, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pyro_dgm.utils.checks import add_note, describe

__all__ = ["generator", "current_generator", "seeded_draws", "seeded_call", "uniform"]


class _State(threading.local):
    """This thread's generator (``None``: torch's default generator)."""

    generator: torch.Generator | None = None


#: the per-thread state: ``STATE.generator`` is the one attribute a draw reads
STATE = _State()


def current_generator() -> torch.Generator | None:
    """The generator this thread's draws use (set by :func:`generator`), or ``None`` for torch's default generator.

    Pass it to the random operations of your own code (a shuffle in a network's ``forward``) so that they follow
    the same stream: ``torch.randperm(n, generator=current_generator())`` (``None`` is torch's default).

    Examples
    --------
    >>> import torch
    >>> current_generator() is None
    True
    >>> g = torch.Generator().manual_seed(0)
    >>> with generator(g):
    ...     current_generator() is g
    True
    """
    return STATE.generator


def uniform(shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """Uniform draws on ``[0, 1)`` of ``shape``, with ``like``'s dtype and device, from this thread's generator (if
    :func:`generator` set one) or torch's default.

    Without a generator set it calls ``torch.rand`` without ``generator=`` at all: torch.compile's tracer refuses
    ``generator=None`` for a shape it has made dynamic (a batch of another size).

    Examples
    --------
    >>> x = torch.zeros(2, 3, dtype=torch.float64)
    >>> with generator(torch.Generator().manual_seed(0)):
    ...     u = uniform((2, 1), x)
    >>> u.dtype, torch.equal(u, torch.rand(2, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    (torch.float64, True)
    """
    g = STATE.generator
    if g is None:
        return torch.rand(shape, dtype=like.dtype, device=like.device)
    return torch.rand(shape, dtype=like.dtype, device=like.device, generator=g)


class generator:  # noqa: N801 (a context manager used like a function, as torch.no_grad)
    """Within the block, the draws pyro_dgm makes in this thread come from ``g`` (thread-local, nestable).

    Parameters
    ----------
    g : torch.Generator or None
        The generator (on the device of the draws); ``None`` restores torch's default generator within the block.

    Raises
    ------
    TypeError
        If ``g`` is neither a ``torch.Generator`` nor ``None``.

    Notes
    -----
    On exit the generator active before the block is restored. Other threads are not affected: two threads that
    train two models, each under its own generator, give bit for bit what each gives alone. See the module
    docstring (:mod:`pyro_dgm.utils.random`) for what honours it. As with any torch call given ``generator=g``, a
    process forked inside the block (a ``DataLoader`` worker under ``fork``) holds a copy of ``g`` in the same state:
    forked workers draw the same numbers unless each gets its own generator (``worker_init_fn``).

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.distributions import Normal
    >>> p = Normal(loc=0., scale=1., var=["x"], features_shape=[3])
    >>> with generator(torch.Generator().manual_seed(0)):
    ...     a = p.sample(batch_n=2)["x"]
    >>> with generator(torch.Generator().manual_seed(0)):
    ...     b = p.sample(batch_n=2)["x"]
    >>> torch.equal(a, b)
    True
    >>> g = torch.Generator().manual_seed(0)  # the same numbers as torch's sampler with that generator
    >>> torch.equal(a, torch.normal(torch.zeros(2, 3), torch.ones(2, 3), generator=g))
    True
    """

    __slots__ = ("_g", "_prev")

    def __init__(self, g: torch.Generator | None) -> None:
        if g is not None and not isinstance(g, torch.Generator):
            raise TypeError(f"pyro_dgm.utils.generator: expected a torch.Generator (or None for torch's default "
                            f"generator), got {type(g).__name__}; e.g. generator(torch.Generator().manual_seed(0))")
        self._g = g
        self._prev: list[torch.Generator | None] = []

    def __enter__(self) -> torch.Generator | None:
        self._prev.append(STATE.generator)  # a list: the same object may be entered again while active
        STATE.generator = self._g
        return self._g

    def __exit__(self, *exc: Any) -> None:
        STATE.generator = self._prev.pop()

    def __repr__(self) -> str:
        return f"generator({self._g!r})"


def _with_generator(op: Any) -> Any:
    """The overload of ``op`` that takes a ``generator`` (``aten.rand.default`` -> ``aten.rand.generator``), ``op``
    itself when it takes one, or ``None`` when there is none."""
    names = [a.name for a in op._schema.arguments]
    if "generator" in names:
        return op
    packet = getattr(torch.ops.aten, op._schema.name.split("::")[-1], None)
    if packet is None:
        return None
    want = set(names) | {"generator"}
    for overload in packet.overloads():
        other = getattr(packet, overload)
        if {a.name for a in other._schema.arguments} == want:
            return other
    return None


#: random aten operation -> its overload that takes a generator (None: it has none); filled on first use
_SEEDED: dict[Any, Any] = {}


class _SeededMode(TorchDispatchMode):
    """Gives this thread's generator to every random aten operation (``Tag.nondeterministic_seeded``) that does not
    name one; refuses the random operations that cannot take one."""

    def __init__(self, g: torch.Generator, owner: Any) -> None:
        super().__init__()
        self.g = g
        self.owner = owner

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if torch.Tag.nondeterministic_seeded not in func.tags or kwargs.get("generator") is not None:
            return func(*args, **kwargs)
        op = _SEEDED.get(func, func)
        if op is func and func not in _SEEDED:
            op = _SEEDED[func] = _with_generator(func)
        if op is None:
            who = describe(self.owner) if self.owner is not None else "a draw"
            family = getattr(self.owner, "distribution_name", "") or type(self.owner).__name__
            raise NotImplementedError(
                f"{who}: a {family} draw calls {func}, a random torch operation that takes no generator, so it "
                "cannot draw from the generator set by pyro_dgm.utils.generator(...); draw it outside the "
                "generator block (torch's default generator), or use a family whose sampler takes one")
        try:
            return op(*args, **{**kwargs, "generator": self.g})
        except RuntimeError as e:
            if "generator" in str(e):  # e.g. a CPU generator for a CUDA draw
                who = describe(self.owner) if self.owner is not None else "a draw"
                add_note(e, f"while {who} drew from the generator of pyro_dgm.utils.generator(...), which is on "
                         f"{self.g.device}: it must be on the device of the draws")
            raise


class seeded_draws:  # noqa: N801 (a context manager used like a function)
    """Within the block, the random torch operations of this thread use its generator (:func:`generator`);
    nothing happens when none is set. For code that calls a sampler it does not control (a distribution's
    ``sample``/``rsample``, ``pyro.sample``).

    Parameters
    ----------
    owner : object, optional
        The distribution (or loss) that draws: errors name it and its family.

    Notes
    -----
    While the block runs, :func:`current_generator` is ``None`` (the random operations get the generator from the
    block), so a draw nested in it is not wrapped twice. Every torch operation in the block goes through Python:
    wrap the sampler call only, not a network.

    Examples
    --------
    >>> import torch
    >>> d = torch.distributions.Gamma(torch.ones(3), torch.ones(3))
    >>> with generator(torch.Generator().manual_seed(1)), seeded_draws():
    ...     a = d.sample()
    >>> with generator(torch.Generator().manual_seed(1)), seeded_draws():
    ...     b = d.sample()
    >>> torch.equal(a, b)
    True
    """

    __slots__ = ("_owner", "_g", "_mode")

    def __init__(self, owner: Any = None) -> None:
        self._owner = owner
        self._g: torch.Generator | None = None
        self._mode: _SeededMode | None = None

    def __enter__(self) -> None:
        g = self._g = STATE.generator
        if g is None:
            return
        self._mode = _SeededMode(g, self._owner)
        self._mode.__enter__()
        STATE.generator = None

    def __exit__(self, *exc: Any) -> None:
        mode = self._mode
        if mode is None:
            return
        self._mode = None
        STATE.generator = self._g
        mode.__exit__(*exc)


def seeded_call(owner: Any, sampler: Any, *args: Any) -> Any:
    """``sampler(*args)``, under :class:`seeded_draws` when this thread has a generator (else a plain call: one
    attribute read more).

    Examples
    --------
    >>> import torch
    >>> d = torch.distributions.Normal(torch.zeros(2), torch.ones(2))
    >>> with generator(torch.Generator().manual_seed(0)):
    ...     x = seeded_call(None, d.sample, (3,))
    >>> torch.equal(x, torch.randn(3, 2, generator=torch.Generator().manual_seed(0)))
    True
    """
    if STATE.generator is None:
        return sampler(*args)
    with seeded_draws(owner):
        return sampler(*args)
