"""The memoizing effect handler: one network forward pass per distribution and inputs within one scope (and, for a
network that draws by itself, per set of Pyro handlers around the call: :func:`draws_in_forward`).

Which scope answers a network call is per thread: each thread keeps its own stack of open memoizing scopes
(:func:`active_memo` is the innermost), so a call is never answered from another thread's cache. Pyro's handler stack
(``pyro.poutine.runtime._PYRO_STACK``) is one list for the whole process: a handler entered in one thread (a
``poutine.trace``, ``condition``, SVI's parameter capture, or :func:`~pyro_dgm.poutine.memoize` used as a Pyro
handler) is seen by every thread and must leave it in the order entered, so Pyro's handlers, ``SVI`` and
``pyro.get_param_store()`` are not for concurrent use from several threads. ``Loss.eval`` and ``Model.train`` open
their scope with ``pyro_stack=False``: nothing of theirs is put on Pyro's stack, and they may run in several threads
on separate models.
"""
from __future__ import annotations

import copy
import ctypes
import dis
import functools
import math
import random
import struct
import threading
import types
import weakref
from collections import OrderedDict
from operator import getitem, is_
from typing import Any, Callable, Hashable, NamedTuple

import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.trace_messenger import TraceMessenger
from torch.nn.modules import module as _nn_module
from torch.nn.modules.dropout import _DropoutNd
from torch.optim.optimizer import register_optimizer_step_post_hook

from pyro_dgm.utils.modules import hook_ends, submodules
from pyro_dgm.utils.random import STATE as _RANDOM
from pyro_dgm.utils.versions import data_ptr, data_ptrs, storages, version
from pyro_dgm.utils.compat import is_compiling, transformed

__all__ = ["MemoizeMessenger", "MissLog", "MissLogs", "get_cache_maxsize", "set_cache_maxsize", "active_memo",
           "watching_backward", "MEMO_SCOPES", "rng_marks", "same_marks", "draws_in_forward", "handlers_key"]

_NOTES_KEPT = 128  # owners whose notes an eager scope keeps (MemoizeMessenger.note)
_MAXSIZE = [128]  # a setting (Pixyz's knob), not evaluation state: the same for every thread


_OPTIMIZER_STEPS = [0]  # optimizer steps taken in this process: a step changes parameters that cached passes used


def _count_step(*_: Any) -> None:
    _OPTIMIZER_STEPS[0] += 1


_COUNTING = threading.Lock()
_COUNTED: list[Any] = []  # the hook's handle, once a scope that needs the count is made (not at import: importing
# pyro_dgm registers nothing with torch)


def _count_steps() -> None:
    """Count torch's optimizer steps from now on (a global post-hook, registered once)."""
    if not _COUNTED:
        with _COUNTING:
            if not _COUNTED:
                _COUNTED.append(register_optimizer_step_post_hook(_count_step))


class _Scopes(threading.local):
    stack: "list[MemoizeMessenger]"
    depth: int

    def __init__(self) -> None:  # runs once in each thread that touches it
        self.stack = []
        self.depth = 0


#: This thread's open memoizing scopes, innermost last (`MEMO_SCOPES.stack`), and how many network calls run in
#: them now (`MEMO_SCOPES.depth`: 2 inside a network's forward that calls another's): read on the hot path by
#: :func:`pyro_dgm.distributions.effects.run_network`.
MEMO_SCOPES = _Scopes()


def active_memo() -> "MemoizeMessenger | None":
    """The innermost memoizing scope open in this thread, or ``None``.

    Examples
    --------
    >>> with MemoizeMessenger(pyro_stack=False) as m:
    ...     active_memo() is m
    True
    >>> active_memo() is None
    True
    """
    stack = MEMO_SCOPES.stack
    return stack[-1] if stack else None


def set_cache_maxsize(maxsize: int) -> None:
    """Set how many forward passes one memoizing scope keeps (Pixyz's knob); ``0`` turns memoization off.

    It takes effect at once, for every scope opened afterwards and for entries added to open ones.

    Examples
    --------
    >>> set_cache_maxsize(0); get_cache_maxsize()
    0
    >>> set_cache_maxsize(128)
    """
    if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 0:
        raise ValueError(f"set_cache_maxsize: maxsize must be a non-negative int, got {maxsize!r}")
    _MAXSIZE[0] = maxsize


def get_cache_maxsize() -> int:
    """The current :func:`set_cache_maxsize` value."""
    return _MAXSIZE[0]


def _arg_key(a: Any, depth: int = 0) -> Hashable:
    if isinstance(a, torch.Tensor):
        if a.is_inference():  # made under torch.inference_mode: no version counter (an entry keeps a copy of its
            return (id(a), "inference", a.requires_grad)  # values instead: MemoizeMessenger._snapshot)
        return (id(a), a._version, a.requires_grad)  # an in-place change bumps _version: a new key, never a stale
        # hit; requires_grad_() between two uses (a gradient penalty's input): a pass with a graph to it
    if isinstance(a, (tuple, list)) and depth < 8:  # an RNN's state (h, c), a PackedSequence: each tensor by
        return (type(a), tuple(_arg_key(v, depth + 1) for v in a))  # identity and version
    if isinstance(a, dict) and depth < 8:
        return (type(a), tuple((k, _arg_key(v, depth + 1)) for k, v in a.items()))
    if isinstance(a, (set, frozenset)) and depth < 8:
        return (type(a), frozenset(_arg_key(v, depth + 1) for v in a))
    try:
        hash(a)
    except TypeError:
        return ("id", id(a))
    if type(a) is float:  # 0.0 == -0.0
        return (float, a, math.copysign(1.0, a))
    return (type(a), a)  # (True == 1 == 1.0: a mask [True, False] is not the indices [1, 0])


_any_autocast = torch._C._is_any_autocast_enabled


def _autocast_key() -> tuple[Any, ...]:
    """Which devices' autocast is on, and in which dtype (an entry made outside ``torch.autocast`` answers no call
    inside it: the layers would compute in another dtype)."""
    return tuple((d, torch.get_autocast_dtype(d)) for d in ("cpu", "cuda", "xpu", "mps")
                 if torch.is_autocast_enabled(d))


def _inference_tensors(a: Any, out: list[Any], depth: int = 0) -> None:
    """Append to ``out`` the tensors made under ``torch.inference_mode`` in ``a`` (also inside the tuples, lists and
    dicts that :func:`_arg_key` reads: an RNN's state ``(h, c)``)."""
    _tensors(a, out, depth, inference_only=True)


def _bits(t: torch.Tensor) -> torch.Tensor:
    """``t``'s values as integers of the same width: equal exactly when they are the same bits (a NaN equals the same
    NaN, -0.0 differs from 0.0)."""
    t = t.resolve_conj().resolve_neg()  # (a conjugate or negative view: its values, copied; else t itself)
    if t.is_complex():
        t = torch.view_as_real(t)
    if t.is_floating_point():
        t = t.view({8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}[t.element_size()])
    return t


def _same_bits(a: torch.Tensor, c: torch.Tensor | None) -> bool:
    """Whether ``a`` holds the bits of its copy ``c`` (``None``: a tensor that cannot be compared, a sparse, nested,
    quantized or meta one, which never matches: its network runs at each call)."""
    if c is None or a.shape != c.shape or a.dtype != c.dtype:
        return False
    try:
        return torch.equal(_bits(a), _bits(c))
    except (RuntimeError, TypeError, NotImplementedError):  # (a dtype torch cannot compare, torch.bits8: never
        return False  # reused)


_HELD_ITEMS = 1024  # the most items of containers looked at per pass, for the module's attributes and again for
# what its forward reads (a global list of a dataset's tensors would otherwise be walked at each evaluation)


def _held_tensors(module: Any) -> list[Any]:
    """The tensors a ``Deterministic`` holds before a pass (:meth:`MemoizeMessenger._note_uses`): its parameters and
    buffers; its attributes (also in its submodules and in containers) and its classes' (their own, not the
    library's); what its ``forward`` (the class's, one set on the instance, a ``functools.partial``, the function
    a decorator wraps) reads from its closure, its arguments bound before, its defaults or the globals it loads (a
    tensor, or one in a list, tuple or dict): the same objects at each of Pixyz's runs (a global tensor of its
    module that a helper reads is found after the pass: :func:`_a_global`). Containers are looked into up to
    :data:`_HELD_ITEMS` items for the attributes and classes and as many for what the forward reads (beyond, a
    tensor counts as made: the networks after it run at each use, as under Pixyz when they draw); a tensor that is
    itself an attribute, a class's, a global it loads, or in a closure cell or a default is always counted."""
    held: list[Any] = []
    is_module = isinstance(module, torch.nn.Module)
    left = [_HELD_ITEMS]
    if is_module:
        held += [*module.parameters(), *module.buffers()]
        for m in submodules(module):
            _walk_held([v for k, v in vars(m).items() if isinstance(v, torch.Tensor) or (
                k not in _MODULE_STATE and not k.startswith("_dgm_"))], held, left)
    for klass in type(module).__mro__:
        if not klass.__module__.startswith(("pyro_dgm.", "torch.", "pyro.")) and klass is not object:
            _walk_held([v for v in vars(klass).values() if isinstance(v, (torch.Tensor, list, tuple, dict))], held,
                       left)
    left = [_HELD_ITEMS]
    for fn in (getattr(type(module), "forward", None), getattr(module, "__dict__", {}).get("forward")):
        for _ in range(8):  # (functools.wraps chains, partials)
            if isinstance(fn, functools.partial):
                _walk_held([fn.args, fn.keywords], held, left)
                fn = fn.func
                continue
            fn = getattr(fn, "__func__", fn)
            code = getattr(fn, "__code__", None)
            if code is not None:
                cells = []
                for cell in fn.__closure__ or ():
                    try:
                        cells.append(cell.cell_contents)
                    except ValueError:  # (a cell not yet filled)
                        pass
                g = fn.__globals__
                _walk_held([*cells, *(fn.__defaults__ or ()), *(fn.__kwdefaults__ or {}).values(),
                            *(g[n] for n in _global_names(code)[0] if n in g)], held, left)
            fn = getattr(fn, "__wrapped__", None)
            if fn is None:
                break
    return held


_MODULE_STATE = frozenset(vars(torch.nn.Module()))  # (nn.Module's own attributes: parameters, buffers, hooks)
_GLOBAL_NAMES: dict[Any, tuple[str, ...]] = {}


def _global_names(code: Any) -> tuple[tuple[str, ...], frozenset[str]]:
    """The names a function's code (and the code it defines: comprehensions, lambdas) loads as globals (not the
    attribute names that ``co_names`` also holds), and those it assigns (``global h; h = ...``), read from its
    bytecode once per code object."""
    names = _GLOBAL_NAMES.get(code)
    if names is None:
        loads: set[str] = set()
        stores: set[str] = set()
        todo = [code]
        while todo:
            c = todo.pop()
            for i in dis.get_instructions(c):
                if i.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
                    loads.add(i.argval)
                elif i.opname in ("STORE_GLOBAL", "STORE_NAME"):
                    stores.add(i.argval)
            todo += [k for k in c.co_consts if isinstance(k, types.CodeType)]
        if len(_GLOBAL_NAMES) > 4096:
            _GLOBAL_NAMES.clear()
        names = _GLOBAL_NAMES[code] = (tuple(sorted(loads)), frozenset(stores))
    return names


def _a_global(module: Any, t: torch.Tensor) -> bool:
    """Whether ``t`` is a global of the module that defines ``module``'s ``forward`` (the same tensor at each run:
    a helper it calls may read it), other than one its ``forward`` assigns (a tensor the pass made). Looked at after
    the pass, for a tensor not found held otherwise."""
    fn = getattr(type(module), "forward", None)
    g = getattr(fn, "__globals__", None)
    if g is None:
        return False
    code = getattr(fn, "__code__", None)
    stores = _global_names(code)[1] if code is not None else frozenset()
    return any(v is t and k not in stores for k, v in g.items())


def _walk_held(roots: list[Any], out: list[Any], left: list[int]) -> None:
    """Append to ``out`` the tensors among ``roots`` and inside the tuples, lists and dicts among them (8 levels
    deep, the shortest first), looking at no more than ``left[0]`` items of those containers (counted down)."""
    containers = []
    for v in roots:
        if isinstance(v, torch.Tensor):
            out.append(v)
        elif isinstance(v, (tuple, list, dict)):
            containers.append(v)
    for v in sorted(containers, key=len) if len(containers) > 1 else containers:
        _walk_container(v, out, left, 1)


def _walk_container(a: Any, out: list[Any], left: list[int], depth: int) -> None:
    if isinstance(a, dict):
        a = list(a.values())
    if left[0] < len(a):
        a = a[:max(left[0], 0)]
    left[0] -= len(a)
    for v in a:
        if isinstance(v, torch.Tensor):
            out.append(v)
        elif isinstance(v, (tuple, list, dict)) and depth < 8:
            _walk_container(v, out, left, depth + 1)


def _output_marks(value: Any) -> tuple[tuple[torch.Tensor, Any, Any, Any], ...]:
    """``(tensor, version, grad_fn, data address)`` of each tensor that a ``Deterministic``'s forward returned (a
    copy for the version of one made under ``torch.inference_mode``, which counts no versions; ``None`` for one that
    cannot be compared): another network that changes it in place (``h.mul_(2)``, ``nn.ReLU(inplace=True)``),
    detaches it in place (``h.detach_()``) or gives it other values through ``h.data = ...`` between two uses makes
    the second use run the forward again, as every use does under Pixyz, instead of reading the changed tensor
    (probes p252, p447: a detached pass gave the later uses no gradient; p448). A change in place through
    ``.data`` (``h.data.clamp_(...)``), which torch does not count, is not seen (porting.md)."""
    found: list[Any] = []
    _tensors(value, found)
    return tuple((t, (t.clone() if _comparable(t) else None) if t.is_inference() else t._version, t.grad_fn, p)
                 for t, p in zip(found, data_ptrs(found)))


def _tensors(a: Any, out: list[Any], depth: int = 0, inference_only: bool = False) -> None:
    """Append to ``out`` the tensors in ``a`` (also inside tuples, lists and dicts), or only those made under
    ``torch.inference_mode``."""
    if isinstance(a, torch.Tensor):
        if not inference_only or a.is_inference():
            out.append(a)
    elif isinstance(a, (tuple, list)) and depth < 8:
        for v in a:
            _tensors(v, out, depth + 1, inference_only)
    elif isinstance(a, dict) and depth < 8:
        for v in a.values():
            _tensors(v, out, depth + 1, inference_only)


def _swapped(a: Any, swap: Callable[[torch.Tensor], torch.Tensor], depth: int = 0) -> Any:
    """``a`` with each tensor ``t`` in it replaced by ``swap(t)`` (also inside tuples, lists and dicts, their
    subclasses too: a named tuple, an ``OrderedDict``, which are copied where one changed); ``a`` itself where none
    did. Only the containers it can copy are looked into (:meth:`MemoizeMessenger._note_uses` notes the tensors
    this reaches)."""
    if isinstance(a, torch.Tensor):
        return swap(a)
    if depth < 8 and isinstance(a, (tuple, list, dict)):
        if isinstance(a, dict):
            items = [(k, _swapped(v, swap, depth + 1)) for k, v in a.items()]
            if all(n is v for (_, n), v in zip(items, a.values())):
                return a
            if type(a) is dict:
                return dict(items)
            try:
                out = copy.copy(a)
                out.update(items)
                return out
            except Exception:  # (a dict subclass that cannot be copied: not looked into)
                return a
        new = [_swapped(v, swap, depth + 1) for v in a]
        if all(n is v for n, v in zip(new, a)):
            return a
        kind = type(a)
        if kind is tuple or kind is list:
            return kind(new)
        try:
            return kind._make(new) if hasattr(kind, "_make") else kind(new)  # (a named tuple: its fields)
        except Exception:  # (a container subclass that cannot be rebuilt so: not looked into)
            return a
    return a


#: values that hold no tensor (what a Deterministic's output may hold besides tensors and containers)
_PLAIN = (type(None), bool, int, float, complex, str, bytes, torch.Size, torch.dtype, torch.device)


def _opaque(a: Any, depth: int = 0) -> bool:
    """Whether a ``Deterministic``'s output ``a`` holds something a reuse cannot hand on as a copy
    (:meth:`MemoizeMessenger._reused`): an object of another kind (a user's class with tensor attributes), a tuple
    subclass that cannot be rebuilt from its items (its own ``__new__``), containers nested deeper than
    :func:`_swapped` looks, or a tensor with gradient hooks (``register_hook``, ``retain_grad``: Pixyz's run at each
    use registers them on each use's tensor, which each use's gradient reaches alone). Such a ``Deterministic``
    runs at every use, as under Pixyz."""
    if isinstance(a, torch.Tensor):
        return bool(a._backward_hooks) or (a.requires_grad and a.retains_grad)
    if isinstance(a, _PLAIN) or type(a).__module__ == "numpy":
        return False
    if depth >= 8:
        return isinstance(a, (tuple, list, dict))
    if isinstance(a, dict):
        return any(_opaque(v, depth + 1) for v in a.values())
    if isinstance(a, (tuple, list)):
        kind = type(a)
        if kind is not tuple and kind is not list and not hasattr(kind, "_make"):
            try:
                again = kind(list(a))
            except Exception:
                return True
            if len(again) != len(a) or any(x is not y for x, y in zip(again, a)):
                return True
        return any(_opaque(v, depth + 1) for v in a)
    return True


def _version_of(t: torch.Tensor) -> int | None:
    """``t._version``, or ``None`` for an inference tensor (which has none, and cannot be changed in place outside
    ``torch.inference_mode``)."""
    try:
        return t._version
    except RuntimeError:
        return None


def _same_outputs(marks: tuple[tuple[torch.Tensor, Any, Any, Any], ...]) -> bool:
    """Whether the tensors of :func:`_output_marks` are as they were."""
    for t, mark, fn, ptr in marks:
        if (mark is None or (t._version != mark if type(mark) is int else not _same_bits(t, mark))
                or t.grad_fn is not fn or (ptr is not None and data_ptr(t) != ptr)):
            return False
    return True



def _comparable(a: torch.Tensor) -> bool:
    return a.layout is torch.strided and not (a.is_nested or a.is_quantized or a.is_meta)


def _numpy_mark() -> Any:
    """Where numpy's global generator (``np.random.*``) is: for its default Mersenne Twister, its key and position,
    copied in place (2.5 kB; its ``state`` builds a dict of arrays, ~50 us); for another bit generator
    (``np.random.set_bit_generator``) its state's text; ``None`` without numpy. (The normal that ``RandomState``
    keeps for its next ``randn``/``normal`` call is not part of it: see :class:`MemoizeMessenger`.)"""
    try:
        import numpy as np
        bg = np.random.mtrand._rand._bit_generator
    except (ImportError, AttributeError):
        return None
    cached = _NUMPY_VIEW.get(id(bg))
    if cached is None or cached[0] is not bg:
        if type(bg) is not np.random.MT19937:
            return repr(bg.state)
        _NUMPY_VIEW.clear()
        cached = _NUMPY_VIEW[id(bg)] = (bg, bg.ctypes.state_address)  # MT19937's state: uint32 key[624], int pos
    return ctypes.string_at(cached[1], 625 * 4)


_NUMPY_VIEW: dict[int, Any] = {}


def _python_address(inst: random.Random) -> int | None:
    """The address of the Mersenne Twister state inside ``inst`` (CPython's ``RandomObject``: the object header,
    then ``int index; uint32_t state[624]``), or ``None`` where the layout is not that one (checked against
    ``getstate()`` on a generator of our own, through draws and a regeneration of the state)."""
    base = object.__basicsize__
    probe = random.Random(20261203)
    try:
        for draws in (0, 1, 700):
            for _ in range(draws):
                probe.random()
            raw = ctypes.string_at(id(probe) + base, 625 * 4)
            key = probe.getstate()[1]  # (the 624 words, then the index)
            if raw != struct.pack("=i624I", key[-1], *key[:-1]):
                return None
    except (ValueError, TypeError, struct.error):
        return None
    return id(inst) + base


_PYTHON_VIEW: list[Any] = []


def _python_mark() -> Any:
    """Where Python's global ``random`` generator is: its position and key, copied in place (2.5 kB;
    ``random.getstate()`` builds a tuple of 625 ints, ~9 us), and its kept Gaussian; its state where the layout is
    not CPython's."""
    inst = random._inst  # type: ignore[attr-defined]
    if not _PYTHON_VIEW or _PYTHON_VIEW[0] is not inst:
        _PYTHON_VIEW[:] = [inst, _python_address(inst)]
    address = _PYTHON_VIEW[1]
    if address is None:
        return random.getstate()
    return (ctypes.string_at(address, 625 * 4), inst.gauss_next)


def rng_marks() -> tuple[Any, ...]:
    """Where the global random number generators are: torch's (the CPU one, and the current CUDA device's once CUDA
    is in use), Python's ``random`` and numpy's, and this thread's generator when one is set
    (:func:`pyro_dgm.utils.generator`: a forward that draws with ``generator=current_generator()``). Two marks differ
    when anything drew from them in between (a forward's ``torch.randint``, dropout, ``random.randint``,
    ``np.random.randint``...); compare them with :func:`same_marks`. A ``torch.Generator`` that a forward makes or
    keeps itself is not seen.

    Examples
    --------
    >>> a = rng_marks(); b = rng_marks()
    >>> same_marks(a, b)
    True
    >>> _ = torch.rand(1)
    >>> same_marks(a, rng_marks())
    False
    >>> a = rng_marks(); _ = random.random()
    >>> same_marks(a, rng_marks())
    False
    """
    cuda = torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None
    own = _RANDOM.generator
    own_mark = None if own is None else (own, own.get_state())  # (a CUDA generator's state is a CPU tensor too)
    return (torch.default_generator.get_state().numpy().tobytes(), cuda, _python_mark(), _numpy_mark(), own_mark)


def same_marks(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Whether nothing drew from the generators between two :func:`rng_marks`."""
    own_a, own_b = a[4], b[4]
    return (a[0] == b[0] and a[2] == b[2] and a[3] == b[3]
            and (a[1] is None) == (b[1] is None) and (a[1] is None or torch.equal(a[1], b[1]))
            and (own_a is None) == (own_b is None)
            and (own_a is None or (own_a[0] is own_b[0] and torch.equal(own_a[1], own_b[1]))))


def _given_generators(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[Any, Any]]:
    """The random generators among a network's arguments (``loss.eval(x, generator=g)`` hands one to a forward that
    names it), also inside a list, tuple or dict: ``torch.Generator``s, numpy's ``Generator``s and
    ``RandomState``s, ``random.Random``s, with their states. A draw from one changes its state, as one from the
    global generators does."""
    found: list[tuple[Any, Any]] = []

    def visit(a: Any, depth: int) -> None:
        state = _generator_state(a)
        if state is not None:
            found.append((a, state))
        elif depth < 4 and isinstance(a, (list, tuple)):
            for v in a:
                visit(v, depth + 1)
        elif depth < 4 and isinstance(a, dict):
            for v in a.values():
                visit(v, depth + 1)

    for a in (*args, *kwargs.values()):
        if type(a) is not torch.Tensor:  # (the usual argument: nothing to look into)
            visit(a, 0)
    return found


def _generator_state(a: Any) -> Any:
    """The state of a random generator (``None`` for anything else, and for one without a state to read: a
    ``random.SystemRandom`` draws from the system's entropy, and is not seen)."""
    if isinstance(a, torch.Generator):
        return a.get_state()
    try:
        if isinstance(a, random.Random):
            return a.getstate()
        if type(a).__module__.startswith("numpy.random"):
            if hasattr(a, "bit_generator"):  # numpy.random.Generator
                return _frozen(a.bit_generator.state)
            if hasattr(a, "get_state"):  # numpy.random.RandomState
                return _frozen(a.get_state(legacy=False))
            if hasattr(a, "state"):  # a bit generator itself (PCG64, MT19937...)
                return _frozen(a.state)
    except (NotImplementedError, AttributeError, TypeError, ValueError):
        return None
    return None


def _frozen(state: Any) -> Any:
    """A numpy generator's state (dicts of numbers and arrays) as something ``==`` compares: arrays as bytes."""
    if isinstance(state, dict):
        return tuple((k, _frozen(v)) for k, v in state.items())
    tobytes = getattr(state, "tobytes", None)
    return tobytes() if tobytes is not None else state


def _same_states(given: list[tuple[Any, Any]]) -> bool:
    for g, state in given:
        now = _generator_state(g)
        if not (torch.equal(now, state) if isinstance(state, torch.Tensor) else now == state):
            return False
    return True


def _param_state(module: Any) -> tuple[Any, ...] | None:
    """What an entry made now for ``module`` answers under: which submodules and parameters it has (a submodule
    replaced, or weights swapped by ``torch.func.functional_call``, make them other objects), how many submodules,
    parameters and forward hooks each module has (a layer appended), which forward hooks (a hook added, or one
    replaced by another: :func:`hook_ends`), also global ones (``register_module_forward_hook``), its parameters'
    versions (``with torch.no_grad(): w.mul_(2)``) and where their data lies (``vector_to_parameters`` assigns
    ``.data``), and which parameter slots hold None (a bias given later). The buffers of submodules in eval mode
    too (a batch norm's statistics, which its output then reads: swapped by ``functional_call`` or changed in place),
    not those of submodules in training mode: a forward pass updates a batch norm's statistics in place, or a
    hand-written running mean by assigning a new tensor, also of a trunk that another network shares, and in
    training mode the outputs do not depend on them (Pixyz's cache reuses such passes too). ``None`` when
    there is nothing to check (not a module, or parameters without a version counter: built under
    ``torch.inference_mode``)."""
    if not isinstance(module, torch.nn.Module):
        return None
    try:
        g_post, g_pre = _nn_module._global_forward_hooks, _nn_module._global_forward_pre_hooks
        dicts: list[Any] = [g_post, g_pre]  # every dict whose size is checked
        ends = [(d, *hook_ends(d)) for d in (g_post, g_pre) if d]
        owners: list[Any] = []  # (dict, key) -> the object it held: submodules, then parameters
        keys: list[Any] = []
        held: list[Any] = []
        params: list[Any] = []
        modules = submodules(module)
        for m in modules:
            mods, ps, post, pre = m._modules, m._parameters, m._forward_hooks, m._forward_pre_hooks
            dicts += (mods, ps, post, pre)
            if post:
                ends.append((post, *hook_ends(post)))
            if pre:
                ends.append((pre, *hook_ends(pre)))
            for k, c in mods.items():
                owners.append(mods), keys.append(k), held.append(c)
            for k, t in ps.items():  # (a slot holding None too: a bias given later fills it)
                owners.append(ps), keys.append(k), held.append(t)
                if t is not None:
                    params.append(t)
            if not m.training and m._buffers:  # in eval mode a batch norm reads its statistics, which a forward
                bs = m._buffers  # pass leaves alone: swapped (functional_call) or changed, they make it run again
                dicts.append(bs)
                for k, t in bs.items():
                    owners.append(bs), keys.append(k), held.append(t)
                    if t is not None:
                        params.append(t)
        subs = modules[1:]  # (not the network itself, whose mode the key holds: an entry must not keep it alive)
        return (tuple(dicts), tuple(map(len, dicts)), tuple(ends), tuple(owners), tuple(keys), tuple(held),
                tuple(params), _marks(params), subs, [m.training for m in subs], storages(params))  # (the storages
        # held, so that new values put in place through .data twice do not land at the address the marks hold)
    except RuntimeError:
        return None


def _same_params(state: tuple[Any, ...]) -> bool:
    dicts, sizes, ends, owners, keys, held, params, marks, modules, modes, _ = state
    if tuple(map(len, dicts)) != sizes or [m.training for m in modules] != modes:  # (q.bn.eval() alone)
        return False
    for d, first, last in ends:  # (usually none: a module without hooks; the lengths are the same here)
        if next(iter(d)) != first or next(reversed(d)) != last:
            return False
    try:  # (d[k]: a TorchScript module's dicts have no get)
        if not all(map(is_, map(getitem, owners, keys), held)):
            return False
    except KeyError:
        return False
    return _marks(params) == marks


def _marks(params: list[Any]) -> list[tuple[Any, ...]]:
    """``(version, requires_grad, data_ptr)`` of each tensor: an in-place change, a frozen layer unfrozen (a graph to
    it) and an assignment of ``.data`` (``vector_to_parameters``, which counts no version) each change it. Raises
    ``RuntimeError`` for an inference tensor (no version), as :func:`_param_state` expects."""
    try:  # (one pass; data_ptr raises for a lazy module's uninitialized parameter: its slow path)
        return [(t._version, t.requires_grad, t.data_ptr()) for t in params]
    except (RuntimeError, ValueError):
        return [(t._version, t.requires_grad, p) for t, p in zip(params, data_ptrs(params))]


def draws_in_forward(module: Any) -> bool:
    """Whether a forward pass of ``module`` draws by itself: a dropout layer in training mode (of a rate above 0),
    a Bayesian network's weights (a ``PyroModule``'s ``PyroSample`` attributes, sample sites at each call), or a
    ``pyro.sample`` site its forward was seen to make under a Pyro handler (:class:`_SiteSpy`). Its output then
    depends on the Pyro handlers around the call (each particle of a Pyro ELBO draws anew, a ``poutine.condition``
    gives the weights): see :func:`handlers_key`."""
    if not isinstance(module, torch.nn.Module):
        return False
    if module.__dict__.get("_dgm_makes_sites"):
        return True
    for m in submodules(module):
        if isinstance(m, _DropoutNd):
            if m.training and m.p > 0:
                return True
        elif m.__dict__.get("_pyro_samples") or m.__dict__.get("_pyro_params"):  # (a PyroParam: its value is
            return True  # the param store's, which poutine.substitute or lift replace)
    return False


def handlers_key() -> tuple[Any, ...]:
    """The Pyro handlers active now, by identity (and a trace handler's trace, new at each ``with``: a handler object
    entered twice records two traces): the key of a network call that draws by itself (:func:`draws_in_forward`),
    whose output one set of handlers shares and another gets anew, as Pyro runs the network at each model run."""
    return tuple((id(m), id(m.trace) if isinstance(m, TraceMessenger) else 0) for m in _PYRO_STACK)


def _handlers_kept() -> tuple[Any, ...]:
    """The objects :func:`handlers_key` names, which an entry keeps alive so that their ids cannot be reused."""
    return tuple((m, m.trace if isinstance(m, TraceMessenger) else None) for m in _PYRO_STACK)


def _buffer_versions(module: Any) -> tuple[Any, ...]:
    """The identity and version of every buffer and parameter of ``module``: a forward pass that changes them (a
    batch norm in training mode, a spectral norm's power iteration, a weight scaled in place) has side effects,
    which Pixyz repeats on every use of a ``Deterministic``."""
    out: list[tuple[int, int]] = []
    try:
        mods = submodules(module)
        if not all(_plain_members(type(m)) for m in mods):  # (a class's own parameters() or buffers(): theirs)
            return tuple((id(t), t._version) for t in (*module.buffers(), *module.parameters()))
        for m in mods:
            for t in m._parameters.values():
                if t is not None:
                    out.append((id(t), t._version))
            if m._buffers:
                for t in m._buffers.values():
                    if t is not None:
                        out.append((id(t), t._version))
    except (RuntimeError, AttributeError):
        return ()
    return tuple(out)


_MEMBERS = tuple(getattr(torch.nn.Module, n) for n in ("parameters", "buffers", "named_parameters", "named_buffers",
                                                        "_named_members"))


def _plain_members(cls: type) -> bool:
    """Whether ``cls`` lists its parameters and buffers as ``nn.Module`` does (from ``_parameters`` and
    ``_buffers``)."""
    return (cls.parameters, cls.buffers, cls.named_parameters, cls.named_buffers, cls._named_members) == _MEMBERS


def _plain_attributes(module: Any) -> tuple[tuple[str, int], ...]:
    """``(name, id)`` of each attribute of ``module``'s own ``__dict__`` but pyro_dgm's (``_dgm_*``): a forward that
    sets one (``self.calls += 1``, ``self.last = h``) may give another output at its next call, which Pixyz makes."""
    d = getattr(module, "__dict__", None)
    return () if d is None else tuple((k, id(v)) for k, v in d.items() if not k.startswith("_dgm_"))


def _note_kept_inputs(module: Any, kept: bool) -> None:
    """Record whether an eager run of ``module`` left its inputs as they were (``False`` for good once one changed
    one in place): a compiled evaluation takes a network that always did to keep them (:func:`_kept_inputs`)."""
    d = getattr(module, "__dict__", None)
    if d is not None and (not kept or "_dgm_keeps_inputs" not in d):
        d["_dgm_keeps_inputs"] = kept


def _kept_inputs(module: Any) -> bool:
    """Whether every eager run of ``module`` left its inputs as they were (see :func:`_note_kept_inputs`): a traced
    run cannot compare versions, and the compiled call's first, eager, call runs each network of the formula."""
    d = getattr(module, "__dict__", None)
    return d is not None and d.get("_dgm_keeps_inputs") is True


def _versions(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """The versions of a call's tensors, also inside tuple, list and dict arguments (an RNN's state), in order."""
    found: list[Any] = []
    _tensors((args, kwargs), found)
    return tuple(version(t) for t in found)


def _traced_mode(module: Any) -> tuple[Any, ...]:
    """What a traced entry answers under besides its module and inputs: the module's mode, grad mode and, for a
    network that draws by itself, the Pyro handlers around the call."""
    return (module.training, torch.is_grad_enabled(),
            _handlers_kept() if _PYRO_STACK and draws_in_forward(module) else ())


def _same_mode(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Two traced entries' modes: train/eval and grad modes equal, and the same handlers (by identity)."""
    return (a[0] == b[0] and a[1] == b[1] and len(a[2]) == len(b[2])
            and all(x[0] is y[0] and x[1] is y[1] for x, y in zip(a[2], b[2])))


class _SiteSpy(Messenger):
    """Sees whether a network's forward makes a Pyro sample site (``pyro.sample`` called in the forward itself, not
    through ``PyroSample``), on a miss under Pyro handlers: such a network is then keyed on the handlers
    (:func:`draws_in_forward`), as Pyro runs it at each model run. It changes nothing and ignores network calls."""

    observes_sites = False

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def _process_message(self, msg: Any) -> None:
        if msg["type"] in ("sample", "param"):  # (pyro.param in a forward: a handler may substitute its value)
            self.seen = True


class MissLog:
    """Which ``Deterministic`` networks that opted in to sharing (``memoizable = True``) one loss's evaluations
    never reuse: one that missed in every lookup of
    :attr:`MISSES` evaluations in a row (a GAN's generator and discriminator, given new inputs at each use) then runs
    without the memoizer's bookkeeping (its key, the random generators' marks before and after its forward, its
    buffers' versions, the stored entry: more than an 8-wide network's forward pass) for the next :attr:`IDLE`
    evaluations, after which it is looked up again. Pixyz runs a ``Deterministic``'s forward on every use, and this
    memoizer reuses one only where running it again would give the same values with no side effect (it drew
    nothing, changed no input, weight or buffer): so running it gives Pixyz's values, draws and calls. Only such
    networks (``memoize_unless_random``) idle: a distribution's network whose pass Pixyz's cache shares between
    uses (one dropout mask, one pass over an input its forward changes in place) is always looked up. A network
    with buffers never idles. ``Loss.eval`` keeps one log per loss and set of input names; a scope the user opens
    (:func:`~pyro_dgm.poutine.memoize`) has none, and none is read or written while ``torch.compile`` traces,
    where the memoizer costs nothing. A copy or a pickle of a loss starts a new, empty log.

    Examples
    --------
    >>> import torch
    >>> log, net = MissLog(), torch.nn.Linear(2, 2)
    >>> for _ in range(MissLog.MISSES):
    ...     log.close({id(net): (net, 0)})  # an evaluation in which ``net`` ran without a hit
    >>> log.idle(net)
    True
    """

    __slots__ = ("entries",)

    MISSES = 3  #: evaluations in a row without a hit after which a network idles
    IDLE = 100  #: evaluations a network then runs without the memoizer

    def __init__(self) -> None:
        self.entries: dict[int, list[Any]] = {}  # id(module) -> [weakref to it, evaluations missed, idle ones left]

    def __reduce__(self) -> tuple[Any, ...]:  # (a copy of the loss starts afresh: the entries hold weak references)
        return (MissLog, ())

    def idle(self, module: Any) -> bool:
        """Whether ``module`` runs without the memoizer in this evaluation."""
        e = self.entries.get(id(module))
        return e is not None and e[2] > 0 and e[0]() is module

    def close(self, seen: dict[int, tuple[Any, int]]) -> None:
        """Count an evaluation's network calls: ``seen`` maps ``id(module)`` to ``(module, 1)`` for one that hit,
        ``(module, 0)`` for one that only missed, ``(module, -1)`` for one that idled."""
        entries = self.entries
        if len(entries) > 4 * max(_MAXSIZE[0], 64):  # (networks made and dropped between evaluations)
            for k in [k for k, e in entries.items() if e[0]() is None]:
                del entries[k]
        for mid, (module, hit) in seen.items():
            e = entries.get(mid)
            if e is None or e[0]() is not module:
                e = entries[mid] = [weakref.ref(module), 0, 0]
            if hit < 0:
                e[2] -= 1
            elif hit:
                e[1] = 0
            else:
                e[1] += 1
                if e[1] >= self.MISSES:
                    e[1] = 0
                    if not any(m._buffers for m in submodules(module)):
                        e[2] = self.IDLE


class MissLogs(dict):
    """A loss's :class:`MissLog` for each set of input names (a copy or a pickle of the loss starts empty)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (MissLogs, ())


class _Traced(NamedTuple):
    """A miss while torch.compile traces: what :meth:`MemoizeMessenger.store` keeps, compared by identity."""
    module: Any
    mode: tuple[bool, bool]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


#: how many scopes watch backward passes (see watching_backward), torch's own engine entry while they do
_WATCHERS: list[Any] = [0, None]
_WATCH_LOCK = threading.Lock()
_WATCH_LOCAL = threading.local()  # .flags: this thread's watchers' flags


def _watched_engine(*args: Any, **kwargs: Any) -> Any:
    """torch's ``_engine_run_backward`` (which ``backward`` and ``torch.autograd.grad`` call), noting in this thread's
    watchers that a backward pass ran. A wrapper of the user's installed before the watch is called, also for a
    backward pass a hook starts inside another; one that calls back into this one (installed during a watch: the
    same backward context as the call that reached it) gets torch's own."""
    local = _WATCH_LOCAL
    task = torch._C._current_graph_task_id()  # (-1 outside a running backward pass; a hook's pass: the outer's)
    outer = getattr(local, "task", None)
    engine = _torch_engine() if outer == task else (_WATCHERS[1] or _torch_engine())
    local.task = task
    try:
        return engine(*args, **kwargs)
    finally:
        local.task = outer
        for flag in getattr(local, "flags", ()):
            flag[0] = True


def _torch_engine() -> Any:
    """torch's own backward entry (``torch.autograd.graph._engine_run_backward``)."""
    from torch.autograd import graph

    return graph._engine_run_backward


class watching_backward:
    """Within the block, a backward pass run in this thread sets ``flag[0]`` (``with watching_backward() as flag``):
    whether a loss differentiates inside its evaluation (a gradient penalty), which torch.compile's first call
    looks for. torch's ``torch.autograd._engine_run_backward`` is wrapped while any thread watches, and put back
    when none does."""

    def __enter__(self) -> list[bool]:
        import torch.autograd as autograd

        with _WATCH_LOCK:
            if _WATCHERS[0] == 0:
                _WATCHERS[1] = autograd._engine_run_backward
                autograd._engine_run_backward = _watched_engine
            _WATCHERS[0] += 1
        flags = _WATCH_LOCAL.__dict__.setdefault("flags", [])
        self.flag = [False]
        flags.append(self.flag)
        return self.flag

    def __exit__(self, *exc: Any) -> None:
        import torch.autograd as autograd

        flags = _WATCH_LOCAL.__dict__.get("flags", [])
        if any(f is self.flag for f in flags):
            flags[:] = [f for f in flags if f is not self.flag]
        with _WATCH_LOCK:
            _WATCHERS[0] -= 1
            if _WATCHERS[0] == 0 and autograd._engine_run_backward is _watched_engine:
                autograd._engine_run_backward = _WATCHERS[1]


class _UserTerm:
    """:meth:`MemoizeMessenger.user_term`'s context."""

    __slots__ = ("memo",)

    def __init__(self, memo: "MemoizeMessenger") -> None:
        self.memo = memo

    def __enter__(self) -> None:
        self.memo._user_terms += 1

    def __exit__(self, *exc: Any) -> None:
        self.memo._user_terms -= 1


class MemoizeMessenger(Messenger):
    """Reuse a distribution's parameters (its network's forward pass) for the same inputs within one scope.

    Networks run through the ``"dgm_params"`` effect (see :func:`pyro_dgm.distributions.effects.run_network`). The key
    is the module, the identity and version of each input tensor (also inside a tuple, list or dict input), the other
    arguments, the module's train/eval mode, whether grad is enabled, and for a network that draws by itself
    (dropout in training mode, a Bayesian ``PyroModule``'s ``PyroSample`` weights, a ``pyro.sample`` call in its
    forward seen under a Pyro handler: :func:`draws_in_forward`) the Pyro
    handlers around the call, so that each particle of a Pyro ELBO, each ``poutine.trace`` and a ``condition`` of the
    weights run it again, as in Pyro; a hit returns the same parameter tensors, so
    autograd sees one forward pass. The inputs are kept alive while cached, so a later tensor cannot take an id the key
    holds. The cache lives for one ``with`` block (one loss evaluation) and is cleared on exit: nothing outlives it, so
    a tensor reused across optimizer steps never meets a stale graph. A step of any ``torch.optim`` optimizer (Pyro's
    wrap them) also clears a scope opened by :func:`~pyro_dgm.poutine.memoize` (around a training loop), and a backward
    pass drops the entries of such a scope that it went through. An entry answers only while the module's submodules,
    parameters and forward hooks are the ones it ran with, and its parameters unchanged (version counters): weights
    swapped by ``torch.func.functional_call`` (an ensemble, a MAML step), a submodule replaced or appended, a hook
    added, removed or replaced by another (also a global one), weights changed in place within the scope, a submodule
    switched between training and eval mode, ``requires_grad_`` of an input or a weight, ``torch.autocast`` and
    ``torch.inference_mode`` make it run again; a change through ``.data``, or to a buffer of a submodule in
    training mode (as a batch norm's forward updates its statistics), is not seen (an eval-mode submodule's buffers
    are). Keys read no tensor data, so a lookup never synchronizes with a GPU, but for an input made under
    ``torch.inference_mode``, which has no version counter: an entry keeps a copy of its values and a hit compares
    them bit by bit (a sparse, nested, quantized or meta one is never reused). A module with ``memoizable = False``
    (e.g. one with dropout, and a :class:`~pyro_dgm.distributions.Deterministic` by default, which Pixyz runs on every
    use) always runs. A module with ``memoize_unless_random=True`` (a ``Deterministic`` that opts in with
    ``memoizable = True``) is reused only when its forward drew nothing from the global random generators
    (:func:`rng_marks`) and changed no input, no buffer and no weight in place: a forward that picks random time
    steps, adds noise, edits its input or weights or updates a batch norm's statistics runs again on each use, as
    under Pixyz. Draws from a generator the forward holds itself (a ``torch.Generator``, ``random.Random(seed)``),
    and the normal numpy's ``RandomState`` kept from its last ``randn``, change no global state: such a module needs
    ``memoizable = False`` (a ``Deterministic``'s default).

    The open scopes are per thread: a network call is answered by the innermost scope of the thread that makes it
    (:func:`active_memo`), never by another thread's.

    Parameters
    ----------
    pyro_stack : bool, default True
        Also enter Pyro's handler stack (as any ``pyro.poutine`` handler; the stack is one for the process, see the
        module's notes on threads). ``False`` opens a scope of this thread only, which is what ``Loss.eval`` does.
    misses : MissLog, optional
        The log of the ``Deterministic`` networks that this scope's loss never reuses (``Loss.eval`` passes its
        own): those that only missed in several evaluations in a row run without the memoizer (see
        :class:`MissLog`). ``None``: every network is looked up.

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.distributions import Normal
    >>> class Q(Normal):
    ...     calls = 0
    ...     def __init__(self):
    ...         super().__init__(var=["z"], cond_var=["x"])
    ...         self.fc = torch.nn.Linear(2, 2)
    ...     def forward(self, x):
    ...         Q.calls += 1
    ...         return {"loc": self.fc(x), "scale": torch.ones_like(x)}
    >>> q, x = Q(), torch.zeros(3, 2)
    >>> with MemoizeMessenger():
    ...     _ = q.sample({"x": x}), q.get_log_prob({"x": x, "z": x})
    >>> Q.calls
    1
    """

    #: A memoizer does not look at sample sites or network calls (it answers network calls through the thread's
    #: scope): pyro_dgm takes its direct path under it (``distributions.effects``).
    observes_sites = False

    def __init__(self, pyro_stack: bool = True, misses: MissLog | None = None) -> None:
        super().__init__()
        self._misses = misses  # the evaluated loss's MissLog (Loss.eval's scope), or None
        self._seen: dict[int, tuple[Any, int]] = {}  # id(module) -> (module, hit?) of this scope: MissLog.close
        self._cache: OrderedDict[Hashable, tuple[Any, tuple[Any, ...]]] = OrderedDict()
        self._states: dict[int, tuple[Any, Any]] = {}  # id(module) -> (weakref to it, its last _param_state): _state
        self._traced: list[tuple[Any, ...]] = []  # the entries of a scope traced by torch.compile
        self._user_terms = 0  # how many user's loss terms run in this scope now (see user_term)
        self._compiled = is_compiling()  # made by a compiled evaluation: a frame of it that Dynamo runs eagerly (past
        # its recompile limit) shares the traced entries (see lookup and call)
        self._notes: list[tuple[Any, Any]] = []  # (owner, value): see note()
        self._copies: dict[int, tuple[Any, Any]] = {}  # id -> weak references to an inference-mode input and its
        # copy (the entries hold both: an evicted one frees them): see _snapshot
        self._uses: dict[int, tuple[Any, Any, Any]] = {}  # id -> (weak reference to a tensor a Deterministic's pass
        # made, or to a copy of it that a reuse handed on; None, or the tensor copied; the copy's version): see
        # _note_uses
        self._pyro_stack = pyro_stack  # False: a scope of this thread only, not a handler on Pyro's global stack
        self._steps: int | None = None  # the optimizer steps counted when the entries were made (set by lookup)
        if pyro_stack and not _COUNTED:  # a scope the user opens may outlive optimizer steps (see lookup)
            _count_steps()

    def __enter__(self) -> "MemoizeMessenger":
        if self._pyro_stack:
            super().__enter__()
        MEMO_SCOPES.stack.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._seen:
            seen, self._seen = self._seen, {}
            if self._misses is not None:
                self._misses.close(seen)
        self._cache.clear()
        self._states.clear()
        self._traced.clear()
        self._notes.clear()
        self._copies.clear()
        self._uses.clear()
        stack = MEMO_SCOPES.stack
        if stack and stack[-1] is self:
            stack.pop()
        elif self in stack:  # left out of order after an error: drop it and the scopes opened inside it
            del stack[stack.index(self):]
        if self._pyro_stack:
            return super().__exit__(*exc)
        return None

    @staticmethod
    def _key(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable | None:
        if not getattr(module, "memoizable", True):
            return None
        kw = tuple((k, _arg_key(v)) for k, v in kwargs.items()) if kwargs else ()
        keys = []
        try:
            for a in args:
                keys.append((id(a), a._version, a.requires_grad) if type(a) is torch.Tensor else _arg_key(a))
        except RuntimeError:  # an inference tensor (torch.inference_mode) has no _version
            keys = [_arg_key(a) for a in args]
        # (a TorchScript trace, Pyro's JIT ELBOs', cannot take an output computed before it began, or in another
        # trace: a constant; the trace's state, held by the entry, tells them apart. For a network that draws by
        # itself, the Pyro handlers around the call (the entry holds them: store): another particle's trace, or a
        # poutine.condition of a Bayesian network's weights, runs it again, as Pyro does; any other network's
        # output is the same under any handlers, and is shared)
        # (inference mode: its outputs are inference tensors, which a later call outside it cannot change in place
        # or differentiate; autocast: the dtype the layers compute in)
        return (id(module), module.training, torch.is_grad_enabled(), torch.is_inference_mode_enabled(),
                _autocast_key() if _any_autocast() else (), torch._C._get_tracing_state(), tuple(keys), kw,
                handlers_key() if _PYRO_STACK and draws_in_forward(module) else ())

    def _forget_traced(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Drop the traced entries once a network has been given tensors: it may have changed one in place (eager keys
        see that by its version, which a view shares with its base, but a traced evaluation cannot branch on it),
        and the next use of those entries' networks then runs them again on the current values. Called only for a
        network that changed an input in its eager runs, or has had none (:func:`_kept_inputs`): the compilers do not
        merge a forward pass run twice."""
        found: list[Any] = []
        _tensors((args, kwargs), found)
        if found:  # (also inside a tuple, list or dict argument: an RNN's state, p451)
            self._traced = []  # every entry: not only those holding these tensors, as one of them may be a view of
            # another entry's input (a Deterministic's h = x.view(...), then h.mul_(...) changes x), which a traced
            # evaluation cannot tell

    def _traced_lookup(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
                       ) -> tuple[Hashable | None, Any]:
        # Under torch.compile the key may not hold ids or versions of tensors (Dynamo would guard on them and
        # recompile for every batch): the entries are compared by identity, which Dynamo decides while tracing,
        # so the cache costs nothing in the compiled graph. A forward that may be random (memoize_unless_random)
        # is not reused while tracing: the generators' state cannot be read without breaking the graph.
        if not getattr(module, "memoizable", True) or getattr(module, "memoize_unless_random", False):
            return None, None
        mode = _traced_mode(module)
        hit = self._traced_hit(module, mode, args, kwargs)
        if hit is not None:
            return None, hit
        return _Traced(module, mode, args, kwargs), None

    def _traced_hit(self, module: Any, mode: tuple[Any, ...], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The value of the traced entry of this call (compared by identity), or ``None``. An entry that a frame run
        eagerly stored records its inputs' versions, which are compared too (an input the loss's own code changed in
        place since: in a traced frame Dynamo guards on them, which only such mixed evaluations meet; an entry a
        traced frame stored has none, as versions cannot be read there without those guards)."""
        for entry in self._traced:
            if (entry[0] is module and _same_mode(entry[1], mode) and len(entry[2]) == len(args)
                    and all(a is b for a, b in zip(entry[2], args)) and entry[3].keys() == kwargs.keys()
                    and all(entry[3][k] is v for k, v in kwargs.items())
                    and (len(entry) == 5 or entry[5] == _versions(args, kwargs))):
                return entry[4]
        return None

    def lookup(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], shared_only: bool = False
               ) -> tuple[Hashable | None, Any]:
        """The key of a call and its cached value (``None`` on a miss or when memoization is off); ``shared_only``:
        not an entry that answers only its own arguments (:meth:`store`'s ``own``)."""
        if _MAXSIZE[0] == 0:
            return None, None
        if is_compiling():
            return self._traced_lookup(module, args, kwargs)
        if (self._user_terms or MEMO_SCOPES.depth > 1) and getattr(module, "memoize_unless_random", False):
            return None, None  # (see user_term: also a Deterministic called in another network's forward)
        key = self._key(module, args, kwargs)
        if key is None:
            return None, None
        if self._traced and not getattr(module, "memoize_unless_random", False):  # a compiled evaluation's frame
            hit = self._traced_hit(module, _traced_mode(module), args, kwargs)  # that Dynamo runs eagerly: what
            if hit is not None:  # its traced frames computed answers here too (else a network with dropout ran
                return None, hit  # twice in one evaluation: two masks)
        if self._pyro_stack and self._steps != _OPTIMIZER_STEPS[0]:  # a scope the user opened around a training
            self._cache.clear()  # loop, and an optimizer stepped since the entries were made: their parameters
            self._states.clear()
            self._steps = _OPTIMIZER_STEPS[0]  # and graphs are gone. (Not Loss.eval's scope, one evaluation: a
            # step in another thread must not make it run a network again; read here, not in __init__, where
            # torch.compile would guard on it)
        hit = self._cache.get(key)
        if (hit is None or (hit[2] is not None and not _same_params(hit[2]))
                or (hit[3] is not None and hit[3]() is not module)
                or (hit[4] and not all(_same_bits(a, c) for a, c in hit[4]))
                or (hit[5] and not _same_outputs(hit[5]))
                or (hit[6] and shared_only)):
            return key, None  # (hit[3]: a network freed and another made at its address, a MAML task's copy)
        self._cache.move_to_end(key)
        return key, hit[0]

    def store(self, key: Hashable | None, value: Any, keep: tuple[Any, ...], module: Any = None,
              snapshot: tuple[tuple[Any, Any], ...] = (), outputs: tuple[tuple[Any, ...], ...] = (),
              own: bool = False) -> None:
        """Keep ``value`` under ``key`` (and ``keep``, the arguments, positional and keyword, and the Pyro handlers
        active where the key names them: the key holds their ids, which an object made later in the scope could
        reuse if they were freed while cached). With ``module``, the network that computed it, the entry answers
        only while it is alive (a new network may take its address), its submodules and parameters are the same
        objects, its parameters unchanged and its submodules in the same train/eval modes (:func:`_param_state`),
        and while the arguments in ``snapshot`` (:meth:`_snapshot`) hold the values copied there, the tensors of
        ``outputs`` (:func:`_output_marks`) are unchanged. ``own``: the pass drew or changed state given a
        ``Deterministic``'s output (:meth:`_note_uses`): the entry answers only a call given the same tensors, not
        one given a copy of them (another use)."""
        maxsize = _MAXSIZE[0]
        if key is None or maxsize == 0:
            return
        if type(key) is _Traced:
            self._traced.append((key.module, key.mode, key.args, key.kwargs, value))
            del self._traced[:-maxsize]
            return
        ref = weakref.ref(module) if isinstance(module, torch.nn.Module) else None
        self._cache[key] = (value, (keep, _handlers_kept()) if key[-1] else keep, self._state(module), ref, snapshot,
                            outputs, own)
        while len(self._cache) > maxsize:
            self._cache.popitem(last=False)
        if self._pyro_stack and torch.is_grad_enabled():  # a scope the user opened around several backward passes
            self._forget_after_backward(key, value)  # (LBFGS's closure, gradient accumulation): not Loss.eval's

    def _state(self, module: Any) -> tuple[Any, ...] | None:
        """``_param_state(module)``, or the one made for ``module``'s last entry while that still holds: the same
        object answers every entry of a network that runs at many inputs in one scope (each time step of a sequence
        model), and checking a state costs a fraction of making one."""
        if not isinstance(module, torch.nn.Module):
            return None
        states = self._states
        known = states.get(id(module))
        if known is not None and known[0]() is module and known[1] is not None and _same_params(known[1]):
            return known[1]
        state = _param_state(module)
        states.pop(id(module), None)
        states[id(module)] = (weakref.ref(module), state)  # (not the network itself: one the user drops is freed)
        if len(states) > max(_MAXSIZE[0], 1):  # (as many networks as the cache holds entries: a scope around a loop
            del states[next(iter(states))]  # that makes and drops networks keeps no more of their weights alive)
        return state

    def _snapshot(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, Any], ...]:
        """``(tensor, copy)`` of each argument made under ``torch.inference_mode`` (which has no version counter to
        show an in-place change, ``x.div_(2)`` in a forward): an entry answers only while each still holds its
        copy's values. One copy of a tensor serves every entry while it holds (eight encoders of one input)."""
        found: list[Any] = []
        _inference_tensors(args, found)
        if kwargs:
            _inference_tensors(kwargs, found)
        out = []
        copies = self._copies
        for a in found:
            if not _comparable(a):
                out.append((a, None))
                continue
            known = copies.get(id(a))
            c = known[1]() if known is not None and known[0]() is a else None
            if c is None or not _same_bits(a, c):
                c = a.clone()
                copies[id(a)] = (weakref.ref(a), weakref.ref(c))
                if len(copies) > 2 * max(_MAXSIZE[0], 1):  # (inputs of evicted entries: their copies are freed)
                    for k in [k for k, (r, rc) in copies.items() if r() is None or rc() is None]:
                        del copies[k]
            out.append((a, c))
        return tuple(out)

    def _forget_after_backward(self, key: Hashable, value: Any) -> None:
        """Drop the entry once a backward pass goes through it: that pass frees its graph."""
        ref = weakref.ref(self)

        def forget(_grad: torch.Tensor) -> None:
            live = ref()
            if live is not None:
                live._cache.pop(key, None)

        parts = value.values() if isinstance(value, dict) else value if isinstance(value, (tuple, list)) else (value,)
        for t in parts:
            if isinstance(t, torch.Tensor) and t.grad_fn is not None:
                t.register_hook(forget)

    def _note_uses(self, value: Any, module: Any, args: Any, held: list[Any]) -> None:
        """Note the tensors a ``Deterministic``'s first pass made (given ``module``, its ``args`` and the tensors it
        ``held`` before the pass: :func:`_held_tensors`). Pixyz runs it at every use, so each use hands the networks
        after it new tensors, and their cache (keyed by the tensors) runs them again; here a reuse hands on copies of
        these tensors (:meth:`_reused`), new objects as under Pixyz. A network given a copy whose pass with the
        tensors themselves drew nothing and changed nothing is shared (the same values); one whose pass draws or
        changes state (dropout, a batch norm's statistics) runs again for each copy, and a later call given the
        tensors of an earlier use gets that use's pass, as from Pixyz's cache. Only tensors the pass made count: one
        it returns as it was given or as it held it before the pass (``x.float()`` of float data, a parameter, a
        submodule's buffer, a tensor in an attribute or its class, a global of its module, a tensor its
        ``forward`` reads from its closure or from a global list or dict) is the same tensor at each of Pixyz's
        runs too; one it keeps during the pass (``self.history.append(h)``) is new at each of them."""
        found: list[Any] = []
        _swapped(value, lambda t: found.append(t) or t)  # (the tensors a reuse can hand on as copies: _reused)
        if not found:
            return
        given: list[Any] = []
        _tensors(args, given)
        old = {id(t) for t in given} | {id(t) for t in held}
        uses = self._uses
        for t in found:  # (not one it was given or held before the pass, nor a global of its module)
            if id(t) in old or isinstance(t, torch.nn.Parameter) or _a_global(module, t):
                continue
            uses[id(t)] = (weakref.ref(t), None, None)

    def _reused(self, value: Any) -> Any:
        """A reused ``Deterministic``'s value with each tensor its pass made (:meth:`_note_uses`) replaced by a copy
        (``clone``: the same values and graph in storage of its own, as Pixyz's next run computes them: a later
        term that changes its copy in place, ``h.mul_(2)`` or an in-place ReLU, leaves the tensors an earlier
        term's graph saved as they were). Outputs that share memory share it in the copies, as in Pixyz's run: one
        tensor under two names is one copy, and views of one tensor (``h`` and ``h[:, :2]``) are views of its
        copy."""
        uses = self._uses
        made: dict[int, torch.Tensor] = {}  # id of a tensor the pass made (or of a view's base) -> its copy

        def copy_of(t: torch.Tensor) -> torch.Tensor:
            new = made.get(id(t))
            if new is None:
                root = t._base
                if root is not None and t.layout is torch.strided and not t.is_nested:
                    copied_root = made.get(id(root))
                    if copied_root is None:
                        copied_root = made[id(root)] = root.clone(memory_format=torch.preserve_format)
                    if copied_root.stride() == root.stride():  # (a view of the copy of its base)
                        new = copied_root.as_strided(t.size(), t.stride(),
                                                     t.storage_offset() - root.storage_offset()
                                                     + copied_root.storage_offset())
                if new is None:
                    new = t.clone()
                made[id(t)] = new
            return new

        def copied(t: torch.Tensor) -> torch.Tensor:
            known = uses.get(id(t))
            if known is None or known[0]() is not t:
                return t
            base = t if known[1] is None else known[1]
            new = copy_of(base)
            uses[id(new)] = (weakref.ref(new), base, _version_of(new))
            return new
        return _swapped(value, copied)

    def _bases(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bool, Any]:
        """Whether a call's arguments hold a ``Deterministic``'s output or a copy of one that a reuse handed on
        (:meth:`_reused`), and the arguments with each such copy that is unchanged since replaced by the output it
        copies (``None`` where none is one)."""
        uses = self._uses
        seen = [False, False]

        def base(t: torch.Tensor) -> torch.Tensor:
            known = uses.get(id(t))
            if known is None or known[0]() is not t:
                return t
            seen[0] = True
            if known[1] is None or _version_of(t) != known[2]:  # (a copy changed in place: a value of its own)
                return t
            seen[1] = True
            return known[1]
        swapped = _swapped((args, kwargs), base)
        return seen[0], (swapped if seen[1] else None)

    def user_term(self) -> "_UserTerm":
        """``with scope.user_term():`` around a user's loss term: while it runs, ``Deterministic`` networks run at
        each use, as Pixyz runs them, and their passes are not kept. The term may differentiate inside the evaluation
        (a gradient norm before a gradient penalty, a first-order inner step: ``torch.autograd.grad`` without
        ``retain_graph``), which frees the graph of the pass it went through: a pass shared with a use outside it
        (a pyro_dgm term's before it) or with another use inside it would fail in the next backward ("Trying to
        backward through the graph a second time") where Pixyz's passes are each their own (p441). The evaluation of
        a formula with a user's term anywhere in it runs inside one from its start (``Loss._dgm_has_user_terms``: a
        pass a pyro_dgm term draws may be handed to the term, p447); formulas of pyro_dgm's own terms, which never
        differentiate, share their passes. A family's parameters Pixyz reuses from its own cache (the same graph,
        freed too), so they are shared inside it too (p439). (A
        ``Deterministic`` called inside another network's ``forward``, which may differentiate through it too: a
        proposal that follows an energy's gradient, runs at each such call in any evaluation: see :meth:`lookup`.)"""
        return _UserTerm(self)

    def note(self, owner: Any, value: Any) -> None:
        """Keep ``value`` for ``owner`` until the scope ends (a flow's last computation while torch.compile
        traces, instead of an attribute of the module that would outlive the traced evaluation). In eager code at
        most :data:`_NOTES_KEPT` owners, the latest: a scope the user opened around a loop that makes and drops
        flows keeps no more of them alive (probe p255); a flow whose note was dropped answers from its module's
        memory, kept beside it in eager code."""
        notes = self._notes
        for i, (o, _) in enumerate(notes):
            if o is owner:
                notes[i] = (owner, value)
                return
        notes.append((owner, value))
        if len(notes) > _NOTES_KEPT and not is_compiling():
            del notes[0]

    def noted(self, owner: Any) -> Any:
        """What :meth:`note` kept for ``owner`` in this scope, or ``None`` (compared by identity: no hashing)."""
        for o, v in self._notes:
            if o is owner:
                return v
        return None

    def call(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run ``module(*args, **kwargs)`` through the cache (the path taken when this is the only handler)."""
        misses = self._misses
        logged = misses is not None and getattr(module, "memoize_unless_random", False) and not is_compiling()
        if logged and misses.idle(module):
            self._seen[id(module)] = (module, -1)
            return module(*args, **kwargs)
        key, hit = self.lookup(module, args, kwargs)
        if logged and key is not None and (hit is not None or id(module) not in self._seen):
            self._seen[id(module)] = (module, int(hit is not None))  # (a hit counts over the scope's misses)
        if hit is not None:
            if self._uses and getattr(module, "memoize_unless_random", False):
                return self._reused(hit)  # (a Deterministic reused: another use, new tensors as under Pixyz)
            return hit
        reads, bases = self._bases(args, kwargs) if self._uses and type(key) is tuple else (False, None)
        if bases is not None:  # (copies of reused Deterministic outputs: the pass given the tensors themselves
            key_of_bases, hit = self.lookup(module, *bases, shared_only=True)  # answers, unless it drew or
            if hit is not None:  # changed state: see _note_uses)
                if logged:
                    self._seen[id(module)] = (module, 1)
                return self._reused(hit) if getattr(module, "memoize_unless_random", False) else hit
        if key is not None and getattr(module, "memoize_unless_random", False):
            if transformed():  # (under torch.func the generators' states cannot be read: it runs on every use)
                return module(*args, **kwargs)
            before, buffers, given = rng_marks(), _buffer_versions(module), _given_generators(args, kwargs)
            snapshot = self._snapshot(args, kwargs)
            attrs = _plain_attributes(module)
            held = _held_tensors(module)
            value = module(*args, **kwargs)
            changed = self._key(module, args, kwargs) != key
            _note_kept_inputs(module, not changed)
            if self._traced and changed:  # (a compiled evaluation's frame run eagerly, which changed its inputs)
                self._forget_traced(args, kwargs)
            if (not same_marks(before, rng_marks()) or changed
                    or _buffer_versions(module) != buffers or not _same_states(given)
                    or not all(_same_bits(a, c) for a, c in snapshot) or _plain_attributes(module) != attrs):
                return value  # it drew random numbers, changed its input, its buffers (a batch norm's statistics,
                # a spectral norm's power iteration), its weights or an attribute of its own (a count of its
                # calls that its output reads): each use runs it again, as under Pixyz
            if _opaque(value):  # (its output cannot be handed on as copies: it runs at each use, as under Pixyz)
                return value
            if bases is not None:  # (shared by the other uses: stored as given the tensors copied)
                key, args, kwargs = key_of_bases, *bases
            self.store(key, value, (args, kwargs) if kwargs else args, module, snapshot, _output_marks(value))
            self._note_uses(value, module, (args, kwargs), held)
            return value  # (runs a Deterministic each time; its output reused only while no one changed it in place)
        if reads:  # (a Deterministic's output, or a copy of one: see _note_uses) whether this pass draws or
            marks = (rng_marks(), _buffer_versions(module), _plain_attributes(module))  # changes state
        unkeyed = (type(key) is not tuple and getattr(module, "__dict__", {}).get("_dgm_keeps_inputs") is not False
                   and not is_compiling())  # (a pass looked up without a key, eagerly: a Deterministic in a
        versions = _versions(args, kwargs) if unkeyed else None  # formula with a user's term, a network with
        # memoizable = False: whether it keeps its inputs is noted all the same, which a compiled evaluation reads)
        if _PYRO_STACK and type(key) is tuple and not key[-1] and isinstance(module, torch.nn.Module):
            with _SiteSpy() as spy:  # (under Pyro handlers only: the SVI path, about 2 us per miss)
                value = module(*args, **kwargs)
            if spy.seen:  # its forward made a sample site: each model run (particle, trace) runs it again
                module.__dict__["_dgm_makes_sites"] = True
                key = self._key(module, args, kwargs)
        else:
            value = module(*args, **kwargs)
        if unkeyed:
            _note_kept_inputs(module, _versions(args, kwargs) == versions)
        own = reads and not (same_marks(marks[0], rng_marks()) and _buffer_versions(module) == marks[1]
                             and _plain_attributes(module) == marks[2])  # (it drew or changed something: it
        # answers only the tensors it was given; else every use of the Deterministic may share its pass)
        keep = (args, kwargs) if kwargs else args
        after = self._key(module, args, kwargs) if type(key) is tuple else None
        if after is not None:
            _note_kept_inputs(module, after == key)
        if self._traced and (after != key if after is not None else not _kept_inputs(module)):  # (a compiled
            self._forget_traced(args, kwargs)  # evaluation: a network may have changed its inputs in place;
            # a traced one is taken to keep them if it did in every eager run, the first call's (CompiledEval))
        snapshot = self._snapshot(args, kwargs) if type(key) is tuple and _MAXSIZE[0] else ()  # (the values
        # after the pass: those of the next call it answers)
        if bases is not None and not own:  # (shared by every use: stored as given the tensors themselves)
            self.store(key_of_bases, value, (bases[0], bases[1]) if bases[1] else bases[0], module, snapshot)
        else:
            self.store(key, value, keep, module, snapshot, own=own)
        if self._compiled and type(key) is tuple:  # a compiled evaluation's frame run eagerly: its traced frames
            self._traced.append((module, _traced_mode(module), args, kwargs, value, _versions(args, kwargs)))
            del self._traced[:-max(_MAXSIZE[0], 1)]
        if after is not None:
            if after != key:  # the network changed an input in place (x /= 255): its next call in this scope is
                # this one, as under Pixyz's cache (else it runs again)
                self.store(after, value, keep, module, snapshot, own=own)
        return value

    # The "dgm_params" effect is answered by the effect's own function (``calls._call_network``), which asks this
    # thread's innermost scope (:func:`active_memo`): a handler method here would also answer other threads' calls,
    # since Pyro's handler stack is one for the process.
