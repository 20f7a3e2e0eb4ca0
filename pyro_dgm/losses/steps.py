"""What a training step checks and puts back when it fails: shared by ``Model.train`` and the discriminator's step
of the adversarial terms (:meth:`~pyro_dgm.losses.adversarial.AdversarialLoss.loss_train`), and, for the gradients
of a ``backward`` that raised (:func:`clear_grads`), by the losses' ``loss_and_grads`` (``SVI.step``: there only the
gradients are cleared; the networks' buffers, a batch norm's statistics, keep the failed batch's update, as under
Pyro's own ELBOs).

A ``Model`` step (or a discriminator's) that raises (an error, Ctrl-C) leaves the weights, the optimizer and the
networks' buffers as they were before it, and a checkpoint saved after it records the random states of its start,
so that a run resumed from it goes on as the uninterrupted run would have. The live generators keep the failed
step's draws: taken again in the same process, the step draws anew, as under Pixyz.
"""
from __future__ import annotations

import _signal
import math
import random
import signal
import struct
import threading
import weakref
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.nn.parameter import UninitializedBuffer

from pyro_dgm.utils.checks import add_note
from pyro_dgm.poutine.memoize_messenger import _numpy_mark, _python_mark
from pyro_dgm.utils.compat import get_total_norm
from pyro_dgm.utils.modules import register_registration_hooks, submodules
from pyro_dgm.utils.random import current_generator

__all__ = ["HALF_DTYPES", "SIGNALS", "SignalDeferral", "StepRandomState", "WatchedBuffers", "autograd_leaves",
           "clear_grads", "finite_sum", "network_buffers", "noting_buffers", "optimizer_arguments", "restore_buffers",
           "take_buffers"]

HALF_DTYPES = (torch.float16, torch.bfloat16)  # a loss in these may overflow to inf while its gradients are finite


def finite_sum(grads: Sequence[Tensor]) -> bool:
    """Whether the sum of every element of ``grads`` is finite: False if any element is NaN or infinite (or, rarely,
    if finite values overflow, which the caller then tells apart). The cheapest full pass over memory: on the CPU,
    for small tensors (:data:`_PER_TENSOR_COST`), torch's multi-tensor check of automatic mixed precision (one call
    for all the tensors: for 32 small gradients a fifth of the cost of a sum per tensor), else a plain sum per tensor
    (also for a sparse gradient; the ``max(abs(g))`` and 2-norm reductions cost 2-80x more there, see
    ``benchmarks/README.md``); elsewhere torch's fused multi-tensor 2-norm (a few kernel launches for any number of
    tensors); one synchronization either way."""
    if any(g.is_complex() for g in grads):  # (a complex parameter: its real and imaginary parts, as reals)
        grads = [torch.view_as_real(g) if g.is_complex() else g for g in grads]
    if grads[0].device.type == "cpu" and sum(g.numel() for g in grads) <= _PER_TENSOR_COST * len(grads):
        found = torch.zeros(1)
        try:  # (it multiplies each tensor by 1 in place: the same values, no version counted; under
            # torch.set_flush_denormal(True) a subnormal gradient reads 0 afterwards, as the optimizer reads it)
            torch._amp_foreach_non_finite_check_and_unscale_(grads, found, _ONE)
        except (AttributeError, RuntimeError, NotImplementedError, TypeError):  # a sparse, integer or expanded one,
            pass  # or another device among them
        else:
            return not found.item()
    if grads[0].device.type == "cpu":
        return math.isfinite(sum(g.sum().item() for g in grads))
    return math.isfinite(get_total_norm(grads, 2.0).item())


#: Elements per tensor (on average) up to which the multi-tensor check is used: it saves about 1.5 us per tensor but
#: writes what it reads (0.15 ns per element against the sums' 0.13; measured at 641 k elements in 10 tensors, where
#: the sums win), so it is kept well below the break-even point of about 65 k.
_PER_TENSOR_COST = 16384


_ONE = torch.ones(1)  # (finite_sum's scale: read only)


def optimizer_arguments(owner: str, arg: str, value: Any, error: type[Exception] = TypeError) -> dict[str, Any]:
    """The keyword arguments of an optimizer given as ``arg`` (``optimizer_params``): a mapping, or (ours) pairs;
    None is none. Anything else (a number, a string such as ``"lr=1e-3"``) raises ``error`` naming ``owner``,
    ``arg`` and what is expected (Pixyz's is ``Adam() argument after ** must be a mapping, not float``).

    Examples
    --------
    >>> optimizer_arguments("Model", "optimizer_params", {"lr": 0.1}), optimizer_arguments("Model", "x", None)
    ({'lr': 0.1}, {})
    >>> optimizer_arguments("Model", "optimizer_params", 1e-3)
    Traceback (most recent call last):
    ...
    TypeError: Model: optimizer_params must be a mapping of the optimizer's arguments (e.g. {'lr': 0.001}), got \
float 0.001
    """
    if value is None:
        return {}
    if not isinstance(value, (str, bytes)):
        try:
            return dict(value)
        except (TypeError, ValueError):
            pass
    raise error(f"{owner}: {arg} must be a mapping of the optimizer's arguments (e.g. {{'lr': 0.001}}), got "
                f"{type(value).__name__} {value!r:.80}")


def needs_closure(optimizer: Any) -> bool:
    """Whether ``optimizer.step`` needs a closure (``torch.optim.LBFGS``: ``step(closure)`` evaluates the loss again,
    several times per step), which a training step that calls ``step()`` once per batch, as Pixyz's does, cannot
    give."""
    import inspect

    try:
        closure = inspect.signature(optimizer.step).parameters.get("closure")
    except (TypeError, ValueError):  # (a step without a signature: a builtin's)
        return False
    return closure is not None and closure.default is inspect.Parameter.empty


def autograd_leaves(t: Tensor) -> list[Tensor]:
    """The leaf tensors (parameters) that ``t``'s autograd graph accumulates gradients into, each once. The graph's
    structure outlives a ``backward`` that freed its saved tensors, or that raised half-way."""
    out: dict[int, Tensor] = {}
    seen: set[Any] = set()
    stack = [t.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        variable = getattr(fn, "variable", None)  # an AccumulateGrad node
        if variable is not None:
            out.setdefault(id(variable), variable)
        stack.extend(f for f, _ in fn.next_functions)
    return list(out.values())


def clear_grads(t: Tensor) -> None:
    """After ``t.backward()`` raised half-way (a hook, a network's backward) under ``pyro.infer.SVI``: set the
    gradients of the parameters of Pyro's param store that ``t`` reaches to None (as ``zero_grad()`` does), so that
    the part of the backward that ran does not add into the next step's (SVI zeroes its parameters' gradients only
    after a step that succeeded; before a step they hold none, or zeros). Other tensors the graph reaches (a user's
    own network trained by its own optimizer, an input with ``requires_grad``) are not SVI's: their gradients, which
    may hold what the user accumulated before the step, are left as they are."""
    import pyro

    store = pyro.get_param_store()._params
    svi_owned = {id(v) for v in store.values()}
    for p in autograd_leaves(t):
        if id(p) in svi_owned:
            p.grad = None


def network_buffers(*modules: nn.Module) -> list[tuple[nn.Module, str, bool]]:
    """``(module, name, persistent)`` of every buffer of the networks in ``modules`` and of the buffers a user's
    distribution class registers itself (not the distributions' constants), each once: what a training step may
    change (batch-norm statistics, a running count) besides the weights. Buffers that are None now (a flow's batch
    norm's ``batch_mean`` before its first training step) and non-persistent ones are listed too (see
    :func:`take_buffers`)."""
    from pyro_dgm.distributions.base import Distribution

    seen: set[int] = set()
    out = []
    for root in modules:
        for m in root.modules():
            if id(m) in seen:
                continue
            seen.add(id(m))
            names = m._buffers.keys()  # (keys(): a TorchScript module's _buffers is torch.jit's dict wrapper, which
            # plain iteration indexes by 0, 1, ...)
            if isinstance(m, Distribution):
                constants = set(getattr(m, "_dgm_const_names", ())) | _OWN_BUFFERS
                names = [n for n in names if n not in constants]
            out.extend((m, n, n not in m._non_persistent_buffers_set) for n in names)
    return out


#: buffers that pyro_dgm's distributions hold besides their constants (fixed weights of experts)
_OWN_BUFFERS = frozenset({"weight_modalities"})


#: what :func:`take_buffers` returns: ``(module, name, the buffer object, a copy of its values, or the version of
#: a large buffer's values, or None)``
TakenBuffers = list[tuple[nn.Module, str, "Tensor | None", "Tensor | int | None"]]

#: the most elements of a persistent buffer that :func:`take_buffers` copies at every step (running statistics are
#: small; a large buffer, a feature bank or a fixed matrix, would cost a copy of megabytes per step)
COPY_LIMIT = 1 << 16


def take_buffers(buffers: Sequence[tuple[nn.Module, str, bool]]) -> TakenBuffers:
    """The ``buffers`` (of :func:`network_buffers`) as a training step finds them, for :func:`restore_buffers`: each
    buffer's object, and a copy of the values of the persistent ones (running statistics, which torch's batch norms
    update in place) of at most :data:`COPY_LIMIT` elements; of a larger one, its version counter (a failed step
    that changed it in place says so in a note). A non-persistent buffer (or one that is None) is only referenced,
    not copied at every step (it may be a large constant mask): one that the step replaces (a flow's batch norm
    assigns its batch statistics anew at each training forward) is put back; one that the step changes in place is
    not."""
    return [(m, n, b, _kept_values(b) if persistent else None) for m, n, persistent in buffers
            for b in (_buffer(m, n),)]


def _kept_values(b: "Tensor | None") -> "Tensor | int | None":
    if b is None or isinstance(b, UninitializedBuffer):  # (a lazy module's buffer before its first call has no
        return None  # values: its step gives them, in the same object, which a failed step leaves as they are)
    return b.clone() if b.numel() <= COPY_LIMIT else b._version


def _buffer(m: nn.Module, name: str) -> "Tensor | None":
    """``m``'s buffer ``name``, or None (a TorchScript module's buffers are in a wrapper without ``get``)."""
    buffers = m._buffers
    return buffers[name] if name in buffers else None


#: bumped when any module registers a submodule (a new one or in another's place), a parameter (a new one or in
#: another's place: ``net.weight = nn.Parameter(...)``) or a buffer of a new name (torch's global registration hooks,
#: installed by the first :class:`WatchedBuffers` or ``Model``); a buffer assigned anew under its name (a flow's
#: batch norm's statistics, at each training step) does not bump it. None: a torch without the hooks
_ADDED: list[int | None] = [0]
_ADDED_WATCHED = [False]


def _module_added(*_: Any) -> None:
    if _ADDED[0] is not None:
        _ADDED[0] += 1


def _buffer_added(module: nn.Module, name: str, _: Any) -> None:
    if _ADDED[0] is not None and name not in module._buffers:  # (called before torch stores it)
        _ADDED[0] += 1


_buffer_added._dgm_new_names_only = True  # type: ignore[attr-defined]  # (see flows.base.Flow.__setattr__)


#: the modules of the distributions that ``Model``s train (see ``Model._dgm_take_containers``): a parameter registered
#: on one of them bumps :data:`_ADDED`; one registered on any other module (a network built anywhere) does not
PARAMETERS_WATCHED: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()


def _parameter_added(module: nn.Module, *_: Any) -> None:
    if _ADDED[0] is not None and module in PARAMETERS_WATCHED:
        _ADDED[0] += 1


def _watch_additions() -> None:
    if _ADDED_WATCHED[0]:
        return
    _ADDED_WATCHED[0] = True
    if not register_registration_hooks(module=_module_added, buffer=_buffer_added, parameter=_parameter_added):
        _ADDED[0] = None  # an older torch: the buffers are listed again at every step


class WatchedBuffers:
    """The buffers of the networks ``roots`` (:func:`network_buffers`), listed again when the networks changed since
    they were last listed, so that a layer added after the first step (a batch norm) is put back by a failed step as
    one present from the start: a module registered anywhere (``nn.Sequential.append``, a layer assigned, a
    ``FlowList``'s ``flow_list`` grown) or a buffer of a new name (torch's registration hooks count them), or a
    container under the roots that holds another number of modules than it did (``insert``, which registers
    nothing). Not seen: a module put in a container's ``_modules`` by hand in another's
    place.

    What :meth:`take` costs at each step besides :func:`take_buffers`: a counter read and the lengths of the
    containers' ``_modules`` (the modules are walked only when either changed).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(2, 2))
    >>> watched = WatchedBuffers(net)
    >>> len(watched.take())
    0
    >>> _ = net.insert(0, nn.BatchNorm1d(2))  # (insert registers nothing)
    >>> [name for _, name, _, _ in watched.take()]
    ['running_mean', 'running_var', 'num_batches_tracked']
    """

    __slots__ = ("roots", "added", "containers", "lengths", "pairs")

    def __init__(self, *roots: nn.Module) -> None:
        self.roots = roots
        self.added: int | None = -1
        self.containers: list[nn.Module] = []
        self.lengths: list[int] = []
        self.pairs: list[tuple[nn.Module, str, bool]] = []

    def take(self) -> TakenBuffers:
        """The buffers as the step finds them (:func:`take_buffers`), of the networks as they are now."""
        _watch_additions()  # (installed once per process: a model unpickled in another one installs it here)
        added = _ADDED[0]
        if added is None or added != self.added or [len(m._modules) for m in self.containers] != \
                self.lengths:
            self.added = added
            self.containers = [m for root in self.roots for m in submodules(root)
                               if m._modules or isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict))]
            self.lengths = [len(m._modules) for m in self.containers]
            self.pairs = network_buffers(*self.roots)
        return take_buffers(self.pairs) if self.pairs else []


class noting_buffers:
    """Within the block, ``ran`` maps the id of each module with buffers that runs (a forward call), but those whose
    ids are in ``skip``, to the module and its buffers as they were before its first call in the block, listed as
    :func:`take_buffers` lists them (with ``whole``, a copy of every buffer, also of a non-persistent or large one),
    for :func:`restore_buffers`. For the networks a step cannot list before it runs them: those the Pyro-side terms
    of a loss run (a guide's network registered by ``pyro.module``). ``called``, where given, maps the id of every
    module called in the block to it. A global forward pre-hook while the block runs.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net, ran = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), {}
    >>> with noting_buffers(ran):
    ...     _ = net(torch.randn(4, 2))
    >>> [type(m).__name__ for m, _ in ran.values()], int(net[1].num_batches_tracked)
    (['BatchNorm1d'], 1)
    >>> restore_buffers([entry for _, entries in ran.values() for entry in entries])
    >>> int(net[1].num_batches_tracked)
    0
    """

    def __init__(self, ran: dict[int, Any], skip: "set[int] | frozenset[int]" = frozenset(), whole: bool = False,
                 called: dict[int, nn.Module] | None = None) -> None:
        self.ran, self.skip, self.whole, self.called = ran, skip, whole, called
        self.handle: Any = None

    def _hook(self, module: nn.Module, args: Any) -> None:
        if self.called is not None and id(module) not in self.called:  # (every module called: where the noted ones
            self.called[id(module)] = module  # sit, to name them)
        if id(module) in self.ran or id(module) in self.skip:
            return
        if isinstance(module, torch.jit.ScriptModule):  # (its submodules run inside TorchScript, where no hook fires:
            for m in module.modules():  # itself and every one of them, now)
                if id(m) not in self.ran and id(m) not in self.skip:
                    if len(m._buffers):
                        self._note(m)
                    else:
                        self.ran[id(m)] = (m, [])
        elif module._buffers:
            self._note(module)

    def _note(self, m: nn.Module) -> None:
        passing = getattr(m, "_non_persistent_buffers_set", ())
        entries = []
        for n in m._buffers.keys():  # (keys(): a TorchScript module's wrapper, see network_buffers)
            b = _buffer(m, n)
            if b is None and self.whole:
                continue
            entries.append((m, n, b, b.detach().clone() if self.whole else
                            _kept_values(b) if n not in passing else None))
        self.ran[id(m)] = (m, entries)

    def __enter__(self) -> None:
        from torch.nn.modules.module import register_module_forward_pre_hook

        self.handle = register_module_forward_pre_hook(self._hook)

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()


def restore_buffers(taken: TakenBuffers, error: BaseException | None = None) -> None:
    """Put back the buffers of a step that failed, as :func:`take_buffers` took them at its start: each buffer
    object the step replaced, and the values of the persistent ones (copied into the object of the step's start,
    which keeps its identity). A buffer too large to copy at each step that the step changed in place is left as
    the step left it, and a note on ``error`` names it."""
    changed = []
    with torch.no_grad():
        for m, n, b, values in taken:
            if _buffer(m, n) is not b:
                m._buffers[n] = b
            if type(values) is int:
                if b is not None and b._version != values:
                    changed.append(f"{type(m).__name__}.{n} ({b.numel()} elements)")
            elif values is not None:
                b.copy_(values)
                if n == "initialized" and m.__dict__.get("_dgm_known_initialized") and not bool(values):
                    m.__dict__["_dgm_known_initialized"] = False  # (an ActNorm that the failed step initialized:
                    # its note that the flag is set, which a call then skips reading, goes with the flag)
    if changed and error is not None:
        add_note(error, f"the failed step changed the buffer(s) {', '.join(changed)} in place, which are not put "
                 f"back: a step copies the buffers of at most {COPY_LIMIT} elements only", "buffers")


class StepRandomState:
    """The random states as a training step found them: what a checkpoint saved after the step failed (``except
    KeyboardInterrupt: model.save(...)``) records, so that it resumes as the uninterrupted run would have gone on.

    The live generators are not put back: the draws of a failed step stay drawn, so the step taken again in the
    same process draws anew, as under Pixyz (a loop that retries a step whose draw failed gets another draw).

    Taken: what a checkpoint saves (:func:`pyro_dgm.models.checkpoint.rng_state`): torch's CPU generator, the CUDA
    generators once CUDA is in use, this thread's :func:`pyro_dgm.utils.generator`, Python's ``random``; about 9 us
    in all, most of it Python's state (``benchmarks/README.md``: a VAE step takes about 8 ms). numpy's global
    generator is only marked (copying its state costs about 30 us more): :meth:`numpy_note` says whether the step
    drew from it, which a checkpoint cannot then undo.
    """

    __slots__ = ("cpu", "cuda", "own", "own_state", "_python", "numpy")

    def __init__(self) -> None:
        self.cpu = torch.default_generator.get_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        own = self.own = current_generator()
        self.own_state = own.get_state() if own is not None else None
        self._python = _python_mark()  # (its bytes: random.getstate() builds 625 ints, which a failed step needs)
        self.numpy = _numpy_mark()

    @property
    def python(self) -> tuple[Any, ...]:
        """Python's ``random`` state, as ``random.getstate()`` gave it when the step began."""
        mark = self._python
        if len(mark) == 3:  # (random.getstate() itself, where CPython's layout is not known)
            return mark
        words = struct.unpack("=i624I", mark[0])  # (the position, then the key: see _python_mark)
        return (random.Random.VERSION, (*words[1:], words[0]), mark[1])

    def numpy_note(self, error: BaseException, what: str) -> str | None:
        """``None``, or, when ``what`` (e.g. ``"Model.train (step 3)"``), which raised ``error``, drew from numpy's
        global generator, a text saying that a checkpoint saved now cannot resume exactly (also added to
        ``error``'s notes)."""
        if _numpy_mark() == self.numpy:
            return None
        text = (f"{what} drew from numpy's global generator (np.random) before it failed; a checkpoint saved before "
                "the next step records torch's and Python's random states as they were before this step, numpy's "
                "as it is now: a run resumed from it does not draw what the uninterrupted run drew")
        add_note(error, text, "numpy")
        return text


_SIGMASK = hasattr(signal, "pthread_sigmask")
_DEFERRED = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP", "SIGALRM", "SIGVTALRM", "SIGPROF",
                                                "SIGUSR1", "SIGUSR2") if hasattr(signal, n))


class _Recorder:
    """What a step puts in a signal's handler's place: while the step holds the handlers it records the signal;
    after, it calls the handler it replaced (code that ran in the step, a library set up lazily, may have kept it as
    the handler to chain to: it then hands the signal on, as that handler would have got it)."""

    __slots__ = ("pending", "replaced", "live")

    def __init__(self, pending: list[tuple[int, Any]], replaced: Any) -> None:
        self.pending, self.replaced, self.live = pending, replaced, True

    def __call__(self, signum: int, frame: Any) -> Any:
        if self.live:
            self.pending.append((signum, frame))  # (the frame is not kept past the release)
            return None
        return self.replaced(signum, frame)

    def __eq__(self, other: object) -> bool:  # (code that runs in the step and compares the handler in place with
        return other is self or self.replaced == other  # its own, a library installing itself once, sees the
        # handler the recorder stands for: it does not install itself again, chained to the recorder, p251)

    def __hash__(self) -> int:
        return id(self)


class SignalDeferral:
    """Holds back the Python-level signal handlers (Ctrl-C's ``KeyboardInterrupt``, a timer's handler) while an
    optimizer updates the weights, so that a step is taken whole or not at all: torch's optimizers update the
    parameters one at a time in Python, and an exception raised between two of them would leave some weights (and
    their optimizer state) new and others old, which no restore of the step's start can mend without copying every
    weight at every step.

    :meth:`hold` (before the optimizer's ``step``) replaces the handlers that are Python functions by one that
    records the signal; :meth:`release` (once the step is counted, by the same owner) puts them back and runs the
    recorded ones, so Ctrl-C's ``KeyboardInterrupt`` is raised after the step, with the weights, the optimizer and
    the step count all new. A caller that must record the step first (``fit``'s running sums, a GAN's discriminator
    step) raises :attr:`keep` around the call, inline (``SIGNALS.keep += 1``; in its ``finally``,
    ``SIGNALS.keep -= 1`` then :meth:`end_keep`): the release waits for it. Signals reach Python's handlers in the
    main thread only, so elsewhere all of this does nothing (callers change :attr:`keep` in the main thread only).
    A step held costs a few microseconds (the handlers read, two swapped).

    Examples
    --------
    >>> import os, signal
    >>> deferral = SignalDeferral()
    >>> deferral.hold("step")
    >>> os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while held: recorded
    >>> try:
    ...     deferral.release("step")  # the handlers back, and Ctrl-C's raised now
    ... except KeyboardInterrupt:
    ...     print("raised after the step")
    raised after the step
    """

    __slots__ = ("saved", "pending", "keep", "owner", "due")

    def __init__(self) -> None:
        self.saved: list[tuple[int, Any, _Recorder]] | None = None  # (signal, the handler in place at the C level,
        # the recorder put in its place)
        self.pending: list[tuple[int, Any]] = []
        self.keep = 0
        self.owner: Any = None
        self.due = False  # the owner's step is over: its release waits for the callers that keep it

    def hold(self, owner: Any) -> None:
        """Defer the Python-level handlers until ``owner``'s :meth:`release` (a no-op if held already, by anyone,
        or outside the main thread)."""
        if self.owner is not None or threading.current_thread() is not threading.main_thread():
            return
        # The handlers are read and swapped at the C level (``_signal``), under any library that patches
        # ``signal.signal``/``getsignal`` (to wrap handlers, or to report the program's own): the library's wrapper
        # is what stays in place, and what it reports of the handlers is left as it was. (Swapping through a patched
        # ``signal.signal`` wrapped the handler put back once more at each step, a RecursionError after a thousand,
        # or never put it back; p247, p249.)
        held = [(s, h) for s in _DEFERRED if callable(h := _signal.getsignal(s))]
        if not held:
            return
        self.saved, self.owner = [], owner
        for s, h in held:
            recorder = _Recorder(self.pending, h)
            try:
                _signal.signal(s, recorder)
            except (ValueError, OSError):  # (a sub-interpreter, or a signal this platform does not let us set)
                continue
            self.saved.append((s, h, recorder))

    def release(self, owner: Any) -> None:
        """If ``owner`` holds the handlers and no caller keeps them: put them back and run those of the signals that
        arrived meanwhile, in order (Ctrl-C's raises ``KeyboardInterrupt`` here)."""
        if self.owner is None or owner is not self.owner:
            return
        if self.keep:
            self.due = True
            return
        self._restore()

    def end_keep(self) -> None:
        """After a caller's ``SIGNALS.keep -= 1``: release the handlers whose owner's step is over (not those of a
        step still running around the caller: a model trained inside another's optimizer hook), once no caller keeps
        them."""
        if self.keep or not self.due:
            return
        self._restore()

    def _restore(self) -> None:
        saved = self.saved or []
        self.saved, self.owner, self.due = None, None, False
        for _, _, recorder in saved:  # (one that code running in the step kept, to chain to it, hands on from now)
            recorder.live = False
        try:
            for s, h, recorder in saved:
                if _signal.getsignal(s) is recorder:  # (a handler the program set meanwhile stays)
                    _signal.signal(s, h)
        finally:
            for s, h, recorder in saved:  # (again, should a signal's handler put back above have raised half-way)
                if _signal.getsignal(s) is recorder:
                    _signal.signal(s, h)
            pending, self.pending = self.pending, []  # (after: none can be recorded any more)
            # each signal that came, once, as the OS delivers it: all made pending together (blocked while raised),
            # then Python runs the handlers now in place at once; if one raises, the others stay pending and run
            # next, as Python runs several signals that came together
            nums = list(dict.fromkeys(signum for signum, _ in pending))
            if nums:
                # (the wakeup fd, asyncio's, got each signal as it came: not again)
                fd = signal.set_wakeup_fd(-1)
                try:
                    # the mask as it is, read before blocking anything: a handler of another signal may run and raise
                    # as any call returns, and what is blocked must be unblocked then too (p251)
                    mask = _signal.pthread_sigmask(signal.SIG_BLOCK, ()) if _SIGMASK else None
                    try:
                        if mask is not None:
                            _signal.pthread_sigmask(signal.SIG_BLOCK, nums)
                        for signum in nums:
                            signal.raise_signal(signum)
                    finally:
                        if mask is not None:
                            _signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                finally:
                    if fd != -1:
                        signal.set_wakeup_fd(fd)


#: the deferral of the training steps (``Model.train``, the adversarial terms' ``loss_train``)
SIGNALS = SignalDeferral()
