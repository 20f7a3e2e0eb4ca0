r"""Compiled loss evaluation: ``Model(..., compile=True)`` and :meth:`Loss.compile
<pyro_dgm.losses.base.Loss.compile>` (which Pyro's ``SVI`` then steps through).

A loss evaluation — every term's draws, network calls, log-densities and closed forms — traces into one graph with
no graph break (the memoizing scope and the flows' memories compare tensors by identity while tracing, the
standard-prior shortcut and other value tests are skipped or asserted in the graph; see ``docs/design.md``), and
the graph does not depend on which tensors a batch holds: a new batch of the same shapes reuses the compiled code
(a batch of another shape, e.g. a smaller last batch, compiles once more, after which torch marks the dim dynamic).
An :class:`~pyro_dgm.losses.IterativeLoss` unrolls its time loop into the graph, so each sequence length is a graph
of its own (from the ninth, torch runs the evaluation eagerly): pad sequences to one length and pass ``mask=``.
Options that ``torch.compile`` refuses are refused when ``compile=`` is given.

:class:`CompiledEval` holds one loss's compiled ``eval(x_dict, return_terms=True, **kwargs)``; ``Model`` uses one for
its training loss and one for its test loss. ``backward`` runs the compiled backward graph; the optimizer step, the
finiteness checks and the gradient check stay eager (they read values). :class:`CompiledOuter` is what
``Loss.compile()`` installs: the outermost evaluation of a loss (its context, terms and recorder), compiled, so
every ``loss.eval(...)`` and every ``SVI`` step with ``loss=`` this loss runs it. Both run their first call
eagerly (what it initializes from its data is set outside the compiled code; see :class:`CompiledEval`).

With CUDA graphs (``{"mode": "reduce-overhead"}`` on a GPU; see :func:`uses_cuda_graphs`) each call marks a new
step (``torch.compiler.cudagraph_mark_step_begin``) and returns clones of the graph's CUDA outputs: the graph's own
output buffers are overwritten by its next replay, and a loss that ``Model.train`` returned and the user kept
(``losses.append(model.train(x))``) must still read.

Examples
--------
>>> import torch
>>> from pyro_dgm.distributions import Normal
>>> p = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"])
>>> ev = CompiledEval((-p.log_prob()).mean(), compile_options("Model", {"backend": "eager"}))
>>> loss, terms = ev({"x": torch.zeros(3, 2)}, {})
>>> round(float(loss), 4), float(loss) == float((-p.log_prob()).mean().eval({"x": torch.zeros(3, 2)}))
(1.8379, True)
"""
from __future__ import annotations

import contextlib
import inspect
import numbers
import sys
import threading
import warnings
import weakref
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor
from torch.distributions import Distribution as _Distribution

from pyro_dgm.distributions.closed_forms import validating
from pyro_dgm.distributions.overrides import current_of
from pyro_dgm.utils.lru_cache import _watch_structure, current_structure
from pyro_dgm.utils.compat import COMPILE_SINCE, compiles, is_compiling, mark_step_begin, transformed
from pyro_dgm.utils.random import STATE as _THREAD_RANDOM
from pyro_dgm.poutine.memoize_messenger import watching_backward
from pyro_dgm.utils.checks import user_stacklevel

__all__ = ["CompiledEval", "CompiledOuter", "OwnEval", "compile_options", "eval_form", "eval_with_terms", "frozen",
           "uses_cuda_graphs", "without_validation"]

_DEFAULTS: dict[str, Any] = {}


def compile_options(owner: str, compile: bool | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``torch.compile`` keyword arguments that ``compile=`` asks for, or ``None`` for eager evaluation.

    ``True`` compiles with torch's defaults (the inductor backend); a dict is passed to ``torch.compile`` as it is
    (``{"mode": "reduce-overhead"}``, ``{"backend": "aot_eager"}``, ``{"dynamic": True}``...).

    Examples
    --------
    >>> compile_options("Model", False) is None, compile_options("Model", True)
    (True, {})
    >>> compile_options("Model", "yes")
    Traceback (most recent call last):
        ...
    TypeError: Model: compile must be True, False or a dict of torch.compile options (mode=, backend=, dynamic=, ...), got 'yes'
    """
    if compile is None or compile is False:
        return None
    if (compile is True or isinstance(compile, Mapping)) and not compiles():
        since = ".".join(map(str, COMPILE_SINCE))
        raise RuntimeError(f"{owner}: compiling the loss evaluation needs torch >= {since} (this is torch "
                           f"{torch.__version__}, whose Dynamo cannot trace it); upgrade torch, or evaluate eagerly "
                           "(compile=False, no loss.compile(): the same values)")
    if compile is True:
        return dict(_DEFAULTS)
    if isinstance(compile, Mapping):
        known = set(inspect.signature(torch.compile).parameters) - {"model"}
        unknown = sorted(set(compile) - known)
        if unknown:
            raise ValueError(f"{owner}: unknown torch.compile option(s) {unknown} in compile=; torch.compile takes "
                             f"{sorted(known)}")
        dynamic = compile.get("dynamic")  # (torch asserts a bool or None)
        if dynamic is not None and not isinstance(dynamic, bool):
            raise TypeError(f"{owner}: the torch.compile option dynamic= in compile= must be True or False or None, "
                            f"got {dynamic!r}")
        for k in ("fullgraph", "disable", "isolate_recompiles"):  # (the last: torch >= 2.13)
            v = compile.get(k)
            if v is not None and not isinstance(v, (numbers.Number, Tensor)) and type(v).__module__ != "numpy":
                # (torch reads these flags' truth: 1, numpy's bool and a 0-d tensor are taken as it takes them)
                raise TypeError(f"{owner}: the torch.compile option {k}= in compile= must be True or False, got "
                                f"{v!r}")
        limit = compile.get("recompile_limit")  # (torch reads these only when the step compiles)
        if limit is not None and not isinstance(limit, numbers.Real):
            raise TypeError(f"{owner}: the torch.compile option recompile_limit= in compile= must be a number "
                            f"(an int) or None, got {limit!r}")
        name = compile.get("name")  # (a mode is checked by torch's trial below)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"{owner}: the torch.compile option name= in compile= must be a string or None, got "
                            f"{name!r}")
        backend = compile.get("backend")
        if backend is not None and not isinstance(backend, str) and not callable(backend):
            raise TypeError(f"{owner}: the torch.compile option backend= in compile= must be a backend's name (see "
                            f"torch._dynamo.list_backends()) or a callable, got {backend!r}")
        options = {**_DEFAULTS, **compile}
        try:  # torch.compile checks its options when called (it compiles at the first call of what it returns):
            _dgm_compile(_no_op, options)  # refused here, not at the training step that would compile
        except Exception as e:  # noqa: BLE001 (InvalidBackend, RuntimeError, AssertionError...: torch's words kept)
            kind = TypeError if isinstance(e, TypeError) else ValueError
            raise kind(f"{owner}: torch.compile refuses compile={dict(compile)!r} ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:200] if str(e) else ''})") from e
        return options
    raise TypeError(f"{owner}: compile must be True, False or a dict of torch.compile options (mode=, backend=, "
                    f"dynamic=, ...), got {compile!r}")


class OwnEval(NamedTuple):
    """How a model calls the ``eval`` that a loss's class defines itself (:func:`eval_form`)."""

    #: whether its signature names ``return_terms`` (called with it, as ``Loss.eval`` is; else as Pixyz's ``Model``
    #: calls it, ``eval(x_dict, **kwargs)``)
    terms: bool
    #: the name its value is reported under when it returns the value alone (the loss's term name)
    name: str


def eval_form(loss: Any) -> OwnEval | None:
    """How a model calls ``loss.eval`` for its value and terms (:func:`eval_with_terms`), decided once per loss.

    ``None`` for pyro_dgm's ``Loss.eval``: ``eval(x_dict, return_terms=True, **kwargs)``. A class that overrides
    ``eval`` (Pixyz's losses are written so: ``eval(self, x_dict={}, return_dict=False,
    return_all=True, **kwargs)``, which may return a bare tensor and pass its keywords on to ``forward``) gets an
    :class:`OwnEval`: it is called as Pixyz's ``Model`` calls it, ``eval(x_dict, **kwargs)``, unless its signature
    names ``return_terms``.

    Examples
    --------
    >>> from pyro_dgm.distributions import Normal
    >>> from pyro_dgm.losses import LogProb
    >>> class Clamped(LogProb):
    ...     def eval(self, x_dict={}, return_dict=False, return_all=True, **kwargs):
    ...         return super().eval(x_dict, **kwargs).clamp(max=0.)
    >>> p = Normal(loc=0., scale=1., var=["x"])
    >>> eval_form(LogProb(p)), eval_form(Clamped(p))
    (None, OwnEval(terms=False, name='\\\\log p(x)'))
    """
    from pyro_dgm.losses.base import Loss  # (base imports this module)

    cls = type(loss)
    if loss is None or getattr(cls, "eval", None) is Loss.eval:
        return None
    try:
        terms = "return_terms" in inspect.signature(cls.eval).parameters
    except (TypeError, ValueError):  # (a callable without a signature)
        terms = False
    try:
        name = loss._dgm_term_name  # (sympy: once, here)
    except Exception:  # noqa: BLE001 (a user's _symbol that fails: the formula is printed nowhere else here)
        name = cls.__name__
    return OwnEval(terms, name)


def eval_with_terms(loss: Any, x_dict: Any, kwargs: Mapping[str, Any], form: OwnEval | None
                    ) -> tuple[Tensor, dict[str, Any]]:
    """``(value, terms)`` of ``loss`` on ``x_dict``, its ``eval`` called as :func:`eval_form` said (``form``).

    A class's own ``eval`` that returns the value alone reports it under the loss's name (as ``Loss.eval`` reports
    a term that is no arithmetic); one called with ``return_terms`` may return ``(value, terms)``.

    Raises
    ------
    TypeError
        If a class's own ``eval`` returns something else, naming the class.
    """
    if form is None:
        return loss.eval(x_dict, return_terms=True, **kwargs)
    if form.terms:
        out = loss.eval(x_dict, return_terms=True, **kwargs)
        if type(out) is tuple and len(out) == 2 and isinstance(out[0], Tensor) and isinstance(out[1], Mapping):
            return out[0], dict(out[1])
    else:
        out = loss.eval({} if x_dict is None else x_dict, **kwargs)  # (Pixyz's Model passes {} by default)
    if isinstance(out, Tensor):
        return out, {form.name: out.detach()}
    call = ("eval(x_dict, return_terms=True, **kwargs)" if form.terms else
            "eval(x_dict, **kwargs), as Pixyz's Model calls it,")
    wanted = "a (value, terms) pair or the value" if form.terms else "the value (a tensor)"
    got = (f"a tuple of {len(out)} ({', '.join(type(v).__name__ for v in out)})" if type(out) is tuple else
           f"a {type(out).__name__}")
    raise TypeError(f"{type(loss).__name__}.eval (the class's own eval) returned {got}; a model calls {call} "
                    f"and trains on what it returns: it must return {wanted}")


class without_validation:
    """Run a call with torch's argument validation off, restoring it after (torch's checks read values: each would
    split a compiled graph). Cheap when validation is already off."""

    def __init__(self) -> None:
        self.was = False

    def __enter__(self) -> None:
        self.was = validating()
        if self.was:
            _Distribution.set_default_validate_args(False)

    def __exit__(self, *exc: Any) -> None:
        if self.was:
            _Distribution.set_default_validate_args(True)


@contextlib.contextmanager
def frozen(params: Sequence[Tensor]) -> Iterator[None]:
    """Run with ``params`` excluded from autograd (``requires_grad`` off, then back on): gradients still flow through
    the values computed from them, none reach them. An adversarial term freezes its discriminator so; a compiled
    evaluation freezes the loss's :meth:`~pyro_dgm.losses.base.Loss.frozen_parameters` before it runs (torch.compile
    cannot trace ``requires_grad_``), so its backward graph leaves them alone too, as the eager one does.

    Examples
    --------
    >>> w = torch.nn.Parameter(torch.ones(2))
    >>> with frozen([w]):
    ...     y = (2 * w).sum()
    >>> y.requires_grad, w.requires_grad
    (False, True)
    """
    if is_compiling():  # frozen before the compiled call, if at all
        yield
        return
    changed = [p for p in params if p.requires_grad]
    for p in changed:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in changed:
            p.requires_grad_(True)


@contextlib.contextmanager
def _undone(module: torch.nn.Module, random: bool = True) -> Iterator[None]:
    """Run a block whose effects on torch's random state (CPU, and the current CUDA device's where CUDA is in use;
    not with ``random=False``) and on ``module``'s buffers are undone after it, whether it raises or not (an
    evaluation run only to see whether it raises)."""
    saved = [(m, name, b, None if b is None else b.detach().clone())  # by name: a flow's batch norm assigns
             for m in module.modules() for name, b in m._buffers.items()]  # new tensors (or None at first)
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices, enabled=random):
            yield
    finally:
        with torch.no_grad():
            for m, name, b, v in saved:
                if b is not None:
                    b.copy_(v)
                m._buffers[name] = b


def _random_state() -> tuple[Any, ...]:
    """torch's random state: the CPU generator's, the current CUDA device's where CUDA is in use, and the thread's
    generator set with :func:`pyro_dgm.utils.generator` (with its state), if any."""
    cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    own = _THREAD_RANDOM.generator
    return torch.get_rng_state(), cuda, own, None if own is None else own.get_state()


def _set_random_state(state: tuple[Any, ...]) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1])
    if state[2] is not None:
        state[2].set_state(state[3])


def _dgm_compile(fn: Any, options: Mapping[str, Any]) -> Any:
    """``torch.compile(fn, **options)``, leaving torch's argument validation as it was: torch.compile switches it off
    for the whole process when first called (``TorchPatcher``); the compiled calls run without it anyway
    (:class:`without_validation`), the eager code around them keeps the user's setting."""
    was = validating()
    compiled = torch.compile(fn, **options)
    if was and not validating():
        _Distribution.set_default_validate_args(True)
    return compiled


def _first_lines(error: BaseException) -> str:
    """Dynamo's reason, with its explanation where it gives one (``Failed to trace builtin operator`` / ``Explanation:
    Dynamo does not know how to trace builtin operator `print` ...``): what the user's code did."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    said = lines[:1] + [line for line in lines[1:3] if line.startswith("Explanation:")]
    return "; ".join(said)[:400]


def _no_op() -> None:
    return None


def _own_code(fn: Any) -> Any:
    """``fn`` behind a function with a code object of its own. Dynamo keeps one cache of compiled code per code
    object, with at most ``recompile_limit`` (8) entries: every model's evaluation compiled through one shared method
    would take an entry of one cache (its guards name the model), and from the ninth model in a process on
    (a notebook cell run again, a sweep) the evaluation would silently run eagerly."""
    classes = ["0"]  # the version of the loss's distribution classes (see _FirstCallEager.__call__); a string,
    # which Dynamo guards on by value (an int that changed would become a symbolic one, guarded no more)

    def call(*args: Any) -> Any:
        if classes[0] == "":  # (never: read while tracing, so that the compiled code guards on its value)
            raise AssertionError
        return fn(*args)

    call.__code__ = call.__code__.replace()  # a copy: the same code, a cache of its own
    call._dgm_classes = classes  # type: ignore[attr-defined]
    return call


#: after this many changes of the code a compiled evaluation follows (``_FirstCallEager.__call__``), each traced
#: again, it is evaluated eagerly, with a warning (p462: a class attribute set to a new function at each step kept
#: a model from ever running compiled, or traced it again every other step, 0.9 MB more each time); Dynamo's own
#: ``recompile_limit``
_CODE_CHANGES = 8

#: what ``_FirstCallEager._dgm_fn`` holds for a loss evaluated eagerly (see :func:`_watching_backward`)
_EAGER_ONLY = object()


def _watching_backward(fn: Any, args: tuple[Any, ...]) -> tuple[Any, bool]:
    """``fn(*args)``, and whether a backward pass ran inside it (``torch.autograd.grad`` in a user's loss term: a
    gradient penalty; :class:`~pyro_dgm.poutine.memoize_messenger.watching_backward`). For the first, eager, call of
    a compiled evaluation only."""
    with watching_backward() as ran:
        out = fn(*args)
    return out, ran[0]


def _hooks_mark(terms: Sequence[Any]) -> tuple[Any, ...]:
    """The handles of the hooks that ``nn.Module.__call__`` runs for the modules ``terms`` (loss terms,
    distributions, networks: their own and the global ones), and the Pixyz hooks that those of them whose class names
    some (``_dgm_hook_names``: ``ActNorm2d._scale``, ``ProductOfNormal._compute_expert_params``) call, set on the
    class or the module: another value after one is added, removed or replaced (Dynamo does not guard on a key of a
    module's ``__dict__``)."""
    g = torch.nn.modules.module
    dicts = [g._global_forward_pre_hooks, g._global_forward_hooks, g._global_backward_hooks,
             g._global_backward_pre_hooks]
    own = []
    for t in terms:
        dicts += [t._forward_pre_hooks, t._forward_hooks, t._backward_hooks, t._backward_pre_hooks]
        names = getattr(type(t), "_dgm_hook_names", ())
        if names:
            own.append(tuple((getattr(type(t), n, None), t.__dict__.get(n)) for n in names))
    return (*(tuple(d) for d in dicts), tuple(own))


#: packages whose classes' code a compiled call does not compare (a user patching torch's or Pyro's own classes is
#: not followed; pyro_dgm's loss terms' ``forward`` and ``eval`` are: :meth:`~pyro_dgm.losses.base.Loss._dgm_forwards`;
#: the standard library's classes are not the user's code, and a ``MagicMock``'s class changes as it is used, p463)
_LIBRARY_PACKAGES = frozenset({"pyro_dgm", "torch", "pyro", *sys.stdlib_module_names})


#: torch's families whose reparameterized draw differentiates through ``_standard_gamma`` (``_standard_gamma_grad``,
#: ``_dirichlet_grad``), which torch 2.13 cannot compile for symbolic shapes
_GAMMA_DRAWS = (torch.distributions.Gamma, torch.distributions.Beta, torch.distributions.Dirichlet,
                torch.distributions.Chi2, torch.distributions.StudentT, torch.distributions.FisherSnedecor,
                torch.distributions.InverseGamma)


def _gamma_drawn(d: Any) -> bool:
    """Whether ``d``'s torch class draws through torch's gamma sampler. A loss holding one compiles with
    ``dynamic=False`` unless the user gave ``dynamic``: torch's automatic dynamic shapes would compile a batch of
    another size with symbolic shapes, where the backend fails on the gamma gradient ("Adding a graph break") and
    Dynamo gives up the frame and compiles the frames it calls, one level deeper at each change of size for as
    long as the model trains (p461: 12 graphs and about 2 s per size change after 16 steps of batches 8, 8, 8, 5).
    With static shapes each batch size compiles once."""
    try:
        cls = d.distribution_torch_class
    except Exception:  # noqa: BLE001 (a composite without one)
        return False
    return isinstance(cls, type) and issubclass(cls, _GAMMA_DRAWS)


def _users_classes(types: Sequence[type]) -> tuple[type, ...]:
    """The classes ``types`` and their bases that are the user's (defined outside pyro_dgm, torch, Pyro and the
    standard library), each once."""
    found: dict[type, None] = {}
    for t in dict.fromkeys(types):
        for k in t.__mro__:
            if k not in found and str(getattr(k, "__module__", "")).partition(".")[0] not in _LIBRARY_PACKAGES:
                found[k] = None
    return tuple(found)


def _held_types(modules: Sequence[Any]) -> list[type]:
    """The classes of the objects that ``modules`` hold as plain attributes (a helper object a network calls,
    ``self.helper = Helper()``; p462), and the classes they hold."""
    out: list[type] = []
    for m in modules:
        for v in vars(m).values():
            t = type(v)  # (not isinstance: a weakref.proxy answers for its object, or raises if it is gone, p463)
            if issubclass(t, type):
                out.append(v)
            elif not issubclass(t, (torch.nn.Module, Tensor, dict, list, tuple, str, int, float)):
                out.append(t)
    return out


def _code_mark(classes: Sequence[type], modules: Sequence[Any]) -> tuple[tuple[int, ...], tuple[Any, ...]]:
    """``(ids, objects)`` of the methods, descriptors and other callables in the dicts of ``classes``, and of the
    classes of ``modules``: another value after one is replaced, added or deleted on a class (a later notebook
    cell's ``Q.helper = fn``), which Dynamo's guards do not see (p460), or after a module's ``__class__`` was
    swapped (whose new class's code is then compared, p462), or a ``forward``/``inverse`` set on a module instance
    (a later cell's ``flow.forward = ...``, p483: Dynamo's guards do not see one added after the trace). The objects
    are held so that their ids are not reused; data attributes (a class's counter) are not compared."""
    code = (*[v for k in classes for v in vars(k).values() if callable(v) or hasattr(type(v), "__get__")],
            *map(type, modules), *[vars(m).get(k) for m in modules for k in ("forward", "inverse")])
    return tuple(map(id, code)), code


def _graph_breaks() -> int:
    """How many graph breaks Dynamo has met in this process (its counters, kept whatever the logging)."""
    return sum(torch._dynamo.utils.counters["graph_break"].values())


#: the code of the user's classes (:func:`_code_mark`) as it was when Dynamo compiled frames of their own for a
#: compiled evaluation (after a graph break): see :func:`_frames_current`
_FRAMES_CODE: "weakref.WeakKeyDictionary[type, tuple[tuple[int, ...], tuple[Any, ...]]]" = weakref.WeakKeyDictionary()


def _frames_compiled(classes: Sequence[type]) -> None:
    """Note the code of ``classes`` as the code that the frames a compiled call just compiled after a graph break
    run (unless noted since the frames were last cleared)."""
    with _FLIGHT[0]:  # (threads note and read it)
        for k in classes:
            if k not in _FRAMES_CODE:
                _FRAMES_CODE[k] = _code_mark([k], ())


def _frames_current() -> bool | None:
    """Whether the frames Dynamo compiled after graph breaks of compiled evaluations can be trusted: the code of the
    user's classes they ran is as it was then. Otherwise (a method patched, or patched and put back, since) clear
    them (``torch._dynamo.reset_code_caches``) unless a compiled evaluation's call is running (p465: clearing them
    while another thread ran them crashed the process); then they are cleared when the last such call ends (p466:
    a compiled evaluation nested in another one's call, in the same thread, waited for ever). ``None``: current,
    or cleared now; ``True``: another thread's compiled call is running; ``False``: only calls of this thread that
    enclose this one are. A user's own compiled function running in another thread meanwhile is not known here.

    A compiled evaluation with graph breaks (a Pyro handler, a ``generator`` block, code Dynamo cannot trace) runs
    the frames after a break as frames of their own, which Dynamo compiles and keeps per code object (a network's
    ``forward``, pyro_dgm's helpers), guarded on neither a class's methods nor our marks: after the user's code
    changed, a new trace of the evaluation, or a new model, would still run their old code (p464: a network class's
    method patched under ``pyro_dgm.utils.generator``; p465: a new model after a method was patched and put back).
    Other compiled functions of the process compile again at their next call. Read before each new trace."""
    with _FLIGHT[0]:  # (no thread enters a compiled evaluation, or notes frames, meanwhile)
        if all(_code_mark([k], ())[0] == mark[0] for k, mark in list(_FRAMES_CODE.items())):
            return None
        if _FLIGHT[1]:
            _FLIGHT[2] = True  # (cleared by the last call to end: _InFlight.__exit__)
            return _FLIGHT[1] > getattr(_DEPTH, "n", 0)
        _clear_frames()
    return None


def _clear_frames() -> None:
    """Clear Dynamo's compiled frames (under ``_FLIGHT``'s lock, with no compiled evaluation's call running)."""
    torch._dynamo.reset_code_caches()
    _FRAMES_CODE.clear()
    _FLIGHT[2] = False


#: (a lock, how many compiled evaluations' compiled calls are running now in all threads, whether the compiled frames
#: are to be cleared when none is: see _frames_current)
_FLIGHT: list[Any] = [threading.Lock(), 0, False]
#: ``n``: how many compiled evaluations' compiled calls this thread is inside (one nested in another's)
_DEPTH = threading.local()


class _InFlight:
    """``with _IN_FLIGHT:`` counts a compiled call while the block runs, and clears stale compiled frames as the last
    one ends (see :func:`_frames_current`); a class, not a generator: it runs at every compiled call."""

    def __enter__(self) -> None:
        with _FLIGHT[0]:
            _FLIGHT[1] += 1
        _DEPTH.n = getattr(_DEPTH, "n", 0) + 1

    def __exit__(self, *exc: Any) -> None:
        _DEPTH.n -= 1
        with _FLIGHT[0]:
            _FLIGHT[1] -= 1
            if _FLIGHT[2] and not _FLIGHT[1]:
                _clear_frames()


_IN_FLIGHT = _InFlight()


def _frozen_of(loss: Any) -> list[Tensor]:
    return [p for term in loss._dgm_walk()[0] for p in term._dgm_method("frozen_parameters")()]


def uses_cuda_graphs(options: Mapping[str, Any]) -> bool:
    """Whether ``torch.compile(**options)`` may run its code as CUDA graphs, whose outputs live in memory that the
    next replay overwrites: the ``"cudagraphs"`` backend, or inductor with ``mode="reduce-overhead"`` or
    ``"max-autotune"``, with its ``triton.cudagraphs`` option, or with ``torch._inductor.config.triton.cudagraphs``
    set for the process. Read when the compiled call is built.

    Examples
    --------
    >>> uses_cuda_graphs({"mode": "reduce-overhead"}), uses_cuda_graphs({}), uses_cuda_graphs({"backend": "eager"})
    (True, False, False)
    """
    backend = options.get("backend", "inductor")
    if backend == "cudagraphs":
        return True
    if backend != "inductor":
        return False
    inner = options.get("options") or {}
    if "triton.cudagraphs" in inner:
        return bool(inner["triton.cudagraphs"])
    if options.get("mode") in ("reduce-overhead", "max-autotune"):
        return True
    from torch._inductor import config

    return bool(config.triton.cudagraphs)


def _kept(out: Any) -> Any:
    """``out`` with every tensor cloned out of the CUDA graphs' memory: a loss returned by ``Model.train`` and kept
    in a list (``losses.append(model.train(x))``) must survive the next step's replay. The clones are part of the
    autograd graph, so ``backward`` from the returned loss reaches the compiled backward as before."""
    return torch.utils._pytree.tree_map_only(Tensor, lambda t: t.clone() if t.is_cuda else t, out)


#: The recursion limit while a compiled evaluation runs: Dynamo inlines the loss tree's evaluation frame by frame,
#: about a hundred Python levels per term of a sum, so a loss of 13 terms went past Python's default 1000
#: (``InternalTorchDynamoError: RecursionError``, probe p297); 60 terms compile within this one.
_COMPILE_RECURSION = 20000


def _raise_recursion() -> Any:
    """Raise the recursion limit to :data:`_COMPILE_RECURSION` (never lower it); returns what puts it back."""
    before = sys.getrecursionlimit()
    if before >= _COMPILE_RECURSION:
        return _nothing
    sys.setrecursionlimit(_COMPILE_RECURSION)
    return lambda: sys.setrecursionlimit(before)


def _nothing() -> None:
    pass


class _Settings:
    """Settings in force while ``with`` blocks of it run: ``set_up()`` makes them and returns what puts the earlier
    ones back. A setting kept per thread (``per_thread()`` says it at first use: torch's compiler settings are context
    variables) is made by the first block of each thread and put back by its last one; a process-wide one (Python's
    recursion limit; torch's settings where a version keeps them for the process) by the first block of any thread and
    the last one out (p344: two calls that overlap; p480: torch's per-thread settings counted across threads left a
    second thread's call with torch's defaults, and the first thread with the call's settings). A class, not a
    generator: it runs at every compiled call."""

    def __init__(self, set_up: Any, per_thread: Any = False) -> None:
        self._set_up = set_up
        self._per_thread = per_thread  # (a bool, or the function that says it at first use)
        self._local = threading.local()
        self._open = 0
        self._restore: Any = None

    def __enter__(self) -> None:
        per_thread = self._per_thread
        if per_thread is not True and per_thread is not False:
            per_thread = self._per_thread = bool(per_thread())
        if per_thread:
            local = self._local
            depth = getattr(local, "depth", 0)
            if not depth:
                local.restore = self._set_up()
            local.depth = depth + 1
            return
        with _SETTINGS_LOCK:
            if not self._open:
                self._restore = self._set_up()
            self._open += 1

    def __exit__(self, *exc: Any) -> None:
        if self._per_thread:
            local = self._local
            local.depth -= 1
            if not local.depth:
                restore, local.restore = local.restore, None
                restore()
            return
        with _SETTINGS_LOCK:
            self._open -= 1
            if not self._open:
                restore, self._restore = self._restore, None
                restore()


def _compiler_settings(settings: Any) -> _Settings:
    """:class:`_Settings` of torch's compiler settings ``(config module, name, value)``, made by ``settings()`` at
    first use."""
    made: list[tuple[Any, str, Any]] = []

    def set_up() -> Any:
        if not made:
            made.extend(settings())
        saved = [(config, k, getattr(config, k)) for config, k, _ in made]
        for config, k, v in made:
            setattr(config, k, v)

        def restore() -> None:
            for config, k, v in saved:
                setattr(config, k, v)
        return restore

    return _Settings(set_up, lambda: all(_per_thread_setting(config, k) for config, k, _ in settings()))


def _per_thread_setting(config: Any, name: str) -> bool:
    """Whether torch keeps the setting ``name`` of ``config`` per thread (a context variable holds a user's value, as
    in torch 2.13's config modules; otherwise one value for the process is assumed)."""
    import contextvars

    entry = getattr(config, "_config", {}).get(name)
    return isinstance(getattr(entry, "user_override", None), contextvars.ContextVar)


def _compiled_call_settings() -> list[tuple[Any, str, Any]]:
    """Dynamo's settings while a compiled call runs (and compiles): it guards on the hooks of the modules it traces
    (by default it does not: a hook added to a network that no distribution registers, one kept in a list or a
    global, would never run in the compiled code; :func:`_hooks_mark` sees those of the modules the loss reaches);
    it leaves numpy's random functions to numpy (by default it draws them from torch's generator, a stream other than
    the eager one's: p471, a network's ``np.random.randn`` noise; a graph break now)."""
    dynamo = torch._dynamo.config
    return [(dynamo, "skip_nnmodule_hook_guards", False), (dynamo, "use_numpy_random_stream", True)]


def _no_donation_settings() -> list[tuple[Any, str, Any]]:
    import torch._functorch.config as functorch_config

    return [(functorch_config, "donated_buffer", False)]


_COMPILED_CALL = _compiler_settings(_compiled_call_settings)
_NO_DONATION = _compiler_settings(_no_donation_settings)
#: the recursion limit of a compiled call (Python's is the process's)
_DEEP_RECURSION = _Settings(_raise_recursion)


def _aot_call_settings() -> list[tuple[Any, str, Any]]:
    """:func:`_compiled_call_settings`, and AOT autograd's graph passes keep every draw (p482, under
    ``backend="aot_eager"``): no common-subexpression pass (it merged two draws of one shape into one, two Monte Carlo
    expectations over a Laplace ``q``: its list of random operations lacks the graph forms of ``uniform_``,
    ``normal_``, ``exponential_`` and ``randn_like``), and draws are impure (inductor's ``fallback_random``, which
    torch's dead-code pass reads: it dropped a draw whose value is not used, an outer expectation's ``z`` that a
    nested one over the same ``q`` draws again, so the random stream moved on by less than eagerly). Inductor's own
    draws are its own random operations (see ``Model``'s ``compile``)."""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    return _compiled_call_settings() + [(functorch_config, "cse", False), (inductor_config, "fallback_random", True)]


_AOT_CALL = _compiler_settings(_aot_call_settings)


def _hook_guards(options: Mapping[str, Any] | None = None) -> _Settings:
    """``with _hook_guards(options):`` Dynamo's settings of a compiled call (:func:`_compiled_call_settings`); with
    a backend other than inductor, also AOT autograd's (:func:`_aot_call_settings`)."""
    if options is not None and options.get("backend", "inductor") != "inductor":
        return _AOT_CALL
    return _COMPILED_CALL


def _deep_recursion() -> _Settings:
    """``with _deep_recursion():`` the recursion limit :data:`_COMPILE_RECURSION` (never lowered) for the compiled
    call."""
    return _DEEP_RECURSION


def no_donated_buffers() -> _Settings:
    """``with no_donated_buffers():`` AOT autograd donates no buffers to the backward passes compiled or run in the
    block: a backward compiled with donated buffers refuses ``retain_graph=True`` (``Model(retain_graph=True,
    compile=...)``: p473, its first compiled step raised torch's "compiled with non-empty donated buffers"), and torch
    reads the setting both when it compiles and when the backward runs. In this thread (torch keeps the setting per
    thread) while a block is open."""
    return _NO_DONATION


_SETTINGS_LOCK = threading.Lock()


class _FirstCallEager:
    """A call run eagerly the first time and compiled by ``torch.compile`` (built at the second call) after."""

    def __init__(self, loss: Any, eager: Any, options: Mapping[str, Any]) -> None:
        self.loss = loss
        self.options = dict(options)
        self._eager = eager
        self._dgm_fn: Any = None
        self._frozen: list[Tensor] = []
        self._dists: list[Any] = []
        self._cores: list[Any] = []
        self._hooked: list[Any] = []
        self._installed: tuple[Any, ...] | None = None
        self._classes_version = ["0"]
        self._structure: int | None = None
        self.calls = 0
        self._graphs = False
        self._differentiates = False  # a backward ran inside the first (eager) evaluation: see _build
        self._users: tuple[Any, ...] = ((),)  # the loss's user's terms and forwards at the first call (__call__)
        self._code_classes: tuple[type, ...] = ()  # the user's classes the loss reaches, and their code (see
        self._code: tuple[Any, ...] = ((), ())  # _code_mark): compared at each call
        self._rewatch = False  # the next first call follows a change of the user's code: watched (see __call__)
        self._watch_pending = False  # the first call ran without gradients: the first call with them is watched
        self._code_changes = 0  # how many times it did (see _CODE_CHANGES)
        self._stale_said = False  # (see __call__: _frames_current)
        self._call_state: tuple[Any, ...] | None = None  # the random state of the last call, if compiled (refuse)

    def _build(self) -> None:
        self.loss._dgm_leaves()  # the terms' names are built (by sympy) here, once, not while tracing (a method,
        # not the property: an operand deleted since raises its own AttributeError, which a property's would hide)
        self._frozen = _frozen_of(self.loss)
        self._dgm_find_distributions()
        if self._differentiates:  # a gradient penalty, score matching: AOT autograd has no double backward (a
            # compiled step would fail in backward(), or while tracing)
            warnings.warn(f"{self.loss.loss_text}: compile=: its evaluation ran a backward pass inside (a user's "
                          "loss term calls torch.autograd.grad: a gradient penalty), which torch.compile's AOT "
                          "autograd cannot differentiate again (a double backward); this loss is evaluated eagerly",
                          RuntimeWarning, stacklevel=user_stacklevel())
            self._dgm_fn = _EAGER_ONLY
            return
        self._graphs = uses_cuda_graphs(self.options)
        code = _own_code(self._eager)
        self._classes_version = code._dgm_classes
        options = self.options
        if "dynamic" not in options and any(_gamma_drawn(c) for c in self._cores):
            options = {**options, "dynamic": False}  # (see _gamma_drawn)
        self._dgm_fn = _dgm_compile(code, options)

    def refuse(self, *args: Any) -> None:
        """After a compiled call on ``args`` whose value is not finite, with validation on (torch's and Pyro's
        default): run the eager evaluation on them from the call's random state, to raise its clear error where it
        refuses them (a NaN batch, which the compiled call, run without validation, scored: p469), with torch's
        random state and the loss's buffers as that error leaves them (as the eager model's); if it does not refuse
        them, torch's random state stays as the compiled call left it. numpy's and Python's global random states
        stay as the compiled call left them (p472: a network's numpy draws, run twice, moved them twice; taking
        them at each call would cost 30 µs); a network's other Python-level effects (a counter) happen twice.
        Nothing after an eager call."""
        state = self._call_state
        if state is None or not validating():
            return
        import random

        import numpy

        after, np_after, py_after = _random_state(), numpy.random.get_state(), random.getstate()
        _set_random_state(state)
        try:
            with _undone(self.loss, random=False):
                self._eager(*args)
        finally:
            numpy.random.set_state(np_after)
            random.setstate(py_after)
        _set_random_state(after)

    def __call__(self, *args: Any) -> Any:
        self._call_state = None  # (set by a compiled call: see refuse)
        if not self.calls:  # the first call's lazy initializations run eagerly (see CompiledEval); a first call
            # that raised (a user's error, a refused batch) left them undone, and does not count: the next call is
            # the eager first one. A user's loss term may differentiate inside it (watched: see _build)
            self._users = self.loss._dgm_forwards()
            if self._users[0] or self._rewatch:
                if transformed():  # (a torch.func transform: not counted, the next call is watched)
                    return self._eager(*args)
                out, self._differentiates = _watching_backward(self._eager, args)
                # a test() first (no gradients) counts, but a penalty that runs only with gradients is unseen: the
                # first call with them is watched too (p466: a test loss, whose calls have none, never compiled)
                self._watch_pending = not self._differentiates and not torch.is_grad_enabled()
            else:
                out = self._eager(*args)
            self.calls, self._rewatch = 1, False
            self._dgm_find_distributions()  # (after the first call's lazy initializations: the classes it reached)
            return out
        if self._code_changes >= _CODE_CHANGES:  # (code that changed at every call: eager from then on, see below)
            return self._eager(*args)
        if (self.loss._dgm_forwards() != self._users
                or _code_mark(self._code_classes, self._hooked)[0] != self._code[0]):
            # a user's term added, a term's forward or eval replaced on the instance or its class, or a method of a
            # user's class (a loss term's, a distribution's or a network's helper) replaced since the first call
            # (p457: a gradient penalty set then; p459, p460: the compiled code ran the old code, which Dynamo does
            # not guard on): the next call is a watched first call again, then it compiles
            self.calls, self._dgm_fn, self._differentiates, self._rewatch = 0, None, False, True
            self._watch_pending = False
            self._code_changes += 1
            if self._code_changes == _CODE_CHANGES:
                warnings.warn(f"{self.loss.loss_text}: compile=: the code of this loss's terms or of the user's "
                              "classes it reaches (its distributions' and networks') changed before "
                              f"{_CODE_CHANGES} of its calls (a class attribute set to a new function, method or "
                              "descriptor at each step?), and each change is traced again: it is evaluated "
                              "eagerly from now on", RuntimeWarning, stacklevel=user_stacklevel())
                return self._eager(*args)
            return self(*args)
        if self._watch_pending and torch.is_grad_enabled() and not transformed():  # (see the first call)
            out, self._differentiates = _watching_backward(self._eager, args)
            self._watch_pending = False
            if self._differentiates:
                self._dgm_fn = None  # (built again: eager, with _build's warning)
            return out
        self.calls += 1
        if self._dgm_fn is None:
            others = _frames_current()
            if others is not None:  # (stale compiled frames that compiled calls running may run: see there)
                if others and not self._stale_said:
                    self._stale_said = True
                    warnings.warn(f"{self.loss.loss_text}: compile=: a method of a class that frames compiled "
                                  "after a graph break run was changed, and another thread is running a compiled "
                                  "evaluation, where clearing those frames is unsafe: this loss is evaluated "
                                  "eagerly until they can be cleared", RuntimeWarning, stacklevel=user_stacklevel())
                return self._eager(*args)
            self._build()
        if self._dgm_fn is _EAGER_ONLY:  # (a loss that differentiates inside its evaluation: see _build)
            return self._eager(*args)
        self._dgm_classes_current()
        state = self._call_state = _random_state()  # (a failed compiled call's draws are undone: see below)
        breaks = _graph_breaks()
        with without_validation(), frozen(self._frozen), _deep_recursion(), _hook_guards(self.options), _IN_FLIGHT:
            try:  # (a call that compiles: the second, or one on inputs the guards have not seen)
                if not self._graphs:
                    out = self._dgm_fn(*args)
                else:
                    mark_step_begin()  # a new step: the last one's outputs were cloned
                    out = _kept(self._dgm_fn(*args))
                if _graph_breaks() != breaks:  # frames of their own compiled after a break (see _frames_current)
                    _frames_compiled(self._code_classes)
                return out
            except Exception as e:  # noqa: BLE001 (looked at below)
                failed = e
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            raise failed  # (an eager run here alone could meet the other processes' collectives)
        # Inputs that the eager evaluation refuses (a bool value or a wrong shape where the compiled code took
        # others: the compiler's failure, or torch's raw error while tracing or running) get its clear error, which
        # names the distribution and the variable. The compiled call's draws are undone, and the eager run's stay
        # where it raises, so the random state is the eager step's (a NaN batch that validation refuses before any
        # draw leaves it as it was, compiled or not); the loss's buffers (batch norms' statistics) are restored.
        _set_random_state(state)
        with _undone(self.loss, random=False):
            self._eager(*args)
        _set_random_state(state)  # (the eager run went through: the failure is the compiled code's alone)
        fullgraph = isinstance(self.options, Mapping) and bool(self.options.get("fullgraph"))
        if isinstance(failed, (torch._dynamo.exc.Unsupported, torch._dynamo.exc.UserError)) and fullgraph:
            raise RuntimeError(f"{self.loss.loss_text}: torch.compile cannot trace this loss's evaluation in one "
                               f"graph ({_first_lines(failed)}), which compile="
                               f"{self.options} forbids with fullgraph=True; drop fullgraph=True (the parts it "
                               "cannot trace then run eagerly), or train without compile=") from failed
        if isinstance(failed, torch._dynamo.exc.BackendCompilerFailed):
            cause = getattr(failed, "inner_exception", None) or failed
            backend = self.options.get("backend") if isinstance(self.options, dict) else None
            other = ("" if backend in ("aot_eager", "eager") else
                     ", or pick another backend, e.g. compile={'backend': 'aot_eager'} (no code generation)")
            raise RuntimeError(f"{self.loss.loss_text}: torch.compile could not compile this loss's evaluation "
                               f"with {self.options or 'its defaults'} ({type(cause).__name__}: "
                               f"{str(cause)[:300]}); train without compile={other}. (It builds the backward pass "
                               "too: this may be an error that the eager evaluation meets only at backward(), such "
                               "as a tensor that the gradient needs, changed in place.)") from failed
        if type(failed) is RuntimeError or isinstance(failed, torch._dynamo.exc.TorchDynamoException):
            raise RuntimeError(f"{self.loss.loss_text}: the compiled evaluation failed where an eager one then ran on "
                               f"these inputs ({type(failed).__name__}: {str(failed)[:300]}): either the error is "
                               "your code's and did not come again (a hook or forward that failed once: the step was "
                               "not taken and may be run again), or the compiled code fails where the eager formulas "
                               "run (compiled kernels check some values that they take, e.g. a Bernoulli's values "
                               "outside [0, 1]): then train without compile=") from failed
        raise failed

    def _dgm_find_distributions(self) -> None:
        """Every distribution the loss reaches as a module (a user Loss's attribute, a distribution inside another's
        network), besides those it lists: their classes are checked before each compiled call. Found again when a
        module, parameter or buffer was registered anywhere since (one added to the loss after compiling)."""
        _watch_structure()
        self._structure = current_structure()
        self._dists = list(dict.fromkeys([*self.loss.distributions,
                                          *(m for m in self.loss.modules() if hasattr(m, "_dgm_order"))]))
        self._cores = [c for d in self._dists for c in d._dgm_order]
        self._hooked = list(dict.fromkeys([*self.loss.modules(), *(m for d in self._dists for m in d.modules())]))
        # (the loss terms, the distributions and their networks: whose hooks nn.Module.__call__ runs)
        self._code_classes = _users_classes([*map(type, self._hooked), *map(type, self.loss._dgm_nodes()),
                                             *_held_types(self._hooked)])
        self._code = _code_mark(self._code_classes, self._hooked)

    def _dgm_classes_current(self) -> None:
        """Follow the weights objects that the user gave the loss's products and mixtures of experts
        (``ExpertWeights._dgm_follow_given``), and install again the hooks of the loss's distribution classes that
        changed since the last call (a later
        cell's ``Q.get_log_prob = ...``: :func:`~pyro_dgm.distributions.overrides.current_of`, which the traced
        code skips), and count a new version of them if any did, or if a hook was added to or removed from a loss
        term, a distribution or a network (or a global module hook: torch's Dynamo does not guard on them, and a
        term or a distribution with one runs through ``nn.Module.__call__``): the compiled code guards on that count,
        which is this loss's own (Dynamo does not guard on a class's attributes; a change to another model's classes
        does not make this one compile again)."""
        if self._structure != current_structure() or self._structure is None:  # a module added anywhere since
            self._dgm_find_distributions()
        for d in self._dists:
            current_of(d)
            if "_dgm_given_weights" in d.__dict__:  # (the weights object the user gave a product or mixture of
                d._dgm_follow_given()  # experts: followed here, where the compiled graph cannot)
        now = (tuple(type(d).__dict__.get("_dgm_installed") for d in self._cores), _hooks_mark(self._hooked))
        if now != self._installed:
            if self._installed is not None:
                self._classes_version[0] = str(int(self._classes_version[0]) + 1)
            self._installed = now

    def __getstate__(self) -> dict[str, Any]:  # the compiled code is not pickled: it is compiled again after
        return {"loss": self.loss, "eager": self._eager, "options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:  # (the loss may not be restored yet: nothing reads it)
        _FirstCallEager.__init__(self, state["loss"], state["eager"], state["options"])


class CompiledOuter(_FirstCallEager):
    """The outermost evaluation of ``loss`` (``inputs, kwargs, return_terms -> (value, samples, recorder)``),
    compiled by ``torch.compile`` with ``options``; see :meth:`Loss.compile <pyro_dgm.losses.base.Loss.compile>`."""


class CompiledEval(_FirstCallEager):
    """``loss.eval(x_dict, return_terms=True, **kwargs)``, compiled by ``torch.compile`` with ``options`` (a class's
    own ``eval`` is called as Pixyz's ``Model`` calls it: see :func:`eval_with_terms`).

    Parameters
    ----------
    loss : Loss
        The loss to evaluate.
    options : dict
        Keyword arguments of ``torch.compile`` (see :func:`compile_options`).

    Notes
    -----
    **The first call runs eagerly**, the second compiles (a few seconds for a small VAE on a CPU; see
    ``benchmarks/README.md``). What a first call initializes from its data (an ``ActNorm2d``'s parameters, a lazy
    module's shapes, the parameters a Pyro guide creates with ``pyro.param``) is so set outside the compiled code:
    traced, such a test of a buffer's value splits the graph, and the parts that run eagerly and the parts that run
    compiled would not share the flows' memory of the call (a dequantizing flow would draw its noise twice).
    Pickled (``torch.save(model)``, ``copy.deepcopy``), it keeps the loss and the options, not the compiled code.

    Random operations in compiled code (a network's dropout; with the inductor backend) come from the compiler's
    own generator, and the compiler may order two draws differently, so they can differ from the eager draws of the
    same seed; ``torch._inductor.config.fallback_random = True`` draws from the eager generator, but inductor may
    still make two draws that do not depend on each other in another order (p485); the ``aot_eager`` backend makes
    eager's draws. Their distribution is the same (design.md, "Random numbers").

    The compiled evaluation runs without torch's argument validation (``Distribution.set_default_validate_args``),
    as Pyro's JIT-compiled ELBOs recommend: each check reads values, which would split the graph. (``torch.compile``
    itself turns validation off for the whole process the first time it is called; this class puts the setting back
    for the eager code around the compiled calls, the first call included.) Parameters out of their support then
    mostly give NaN or infinite values, which ``Model`` reports at the step
    (:class:`~pyro_dgm.models.NonFiniteLossError`); run a step without ``compile=`` to get torch's own message. Not
    always: a formula may stay finite out of its support (a Gamma's or Beta's negative concentration: ``lgamma`` is
    finite there), so constrain such network outputs (``softplus``). The setting is torch's, one for the process:
    while a compiled call runs, evaluations in other threads run without validation too.
    """

    def __init__(self, loss: Any, options: Mapping[str, Any]) -> None:
        super().__init__(loss, self._dgm_evaluate, options)
        self.form = eval_form(loss)  # (a class's own eval is called as Pixyz's Model calls it: eval_with_terms)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.form = eval_form(self.loss)  # (its class is known, restored or not)

    def _dgm_evaluate(self, x_dict: Any, kwargs: Mapping[str, Any]) -> Any:
        return eval_with_terms(self.loss, x_dict, kwargs, self.form)

    def __call__(self, x_dict: Any, kwargs: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        return super().__call__(x_dict, kwargs)
