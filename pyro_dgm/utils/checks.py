"""One place for the checks whose error text names the distribution, the variable and what was expected."""
from __future__ import annotations

import contextlib
import operator
import os
import sys
import threading
import warnings
from typing import Any, Callable, Iterable, Iterator, Sequence

__all__ = ["ShapeError", "OutOfRangeError", "DimensionError", "NotATensorError", "NotATensorAttributeError",
           "MissingVariableError", "DTypeError", "DeviceError", "EmptyBatchError", "NoClosedFormError",
           "NotSupportedError", "DuplicateSiteError", "ArgumentError", "NotOneHotError", "NotBinaryError",
           "LayoutError", "strict_names", "strict_shapes", "ordered_union"]


class ShapeError(ValueError, RuntimeError):
    """A ValueError that names what does not fit, raised where torch raised a RuntimeError (shapes that do not
    broadcast): it is also a RuntimeError, which is what Pixyz programs see there."""


class OutOfRangeError(ValueError, RuntimeError):
    """A ValueError for a value outside the range an operation takes, where torch raises a RuntimeError (a
    discriminator's output outside [0, 1] under a binary cross-entropy): also that RuntimeError."""


class DimensionError(ValueError, IndexError):
    """A ValueError for a dim that a value does not have (``feature_dims=[2]`` of a value with one feature dim),
    where torch raises an IndexError: also that IndexError, which is what Pixyz programs see there."""


class NotATensorError(TypeError, ValueError):
    """A TypeError for a scored value that is not a tensor (a list, a float): also the ValueError torch's argument
    validation raises there, which is what Pixyz programs see."""


class NotATensorAttributeError(NotATensorError, AttributeError):
    """A :class:`NotATensorError` for a parameter of a family that takes tensors only (``Categorical``,
    ``Dirichlet``...) given a text or a number: also the AttributeError torch's distribution raises there (``.dim()``
    of it), which is what Pixyz programs see."""


class MissingVariableError(ValueError, TypeError):
    """A ValueError for a variable that a call needs and was not given; also the TypeError Pixyz programs see when
    a network's ``forward`` misses the argument (Pixyz raises a ValueError where no network takes it)."""


class DTypeError(TypeError, RuntimeError):
    """A TypeError for a value of a dtype an operation cannot take (an int64 or float64 input to a network with
    float32 weights, a bool value scored by a Normal), where torch raises a RuntimeError: also that RuntimeError,
    which is what Pixyz programs see there."""


class DeviceError(ValueError, RuntimeError):
    """A ValueError for a value on another device than the network that takes it (a CPU batch into a network moved
    to the GPU), naming both devices, where torch raises a RuntimeError: also that RuntimeError, which is what Pixyz
    programs see there."""


class EmptyBatchError(ValueError, ZeroDivisionError):
    """A ValueError for data of 0 rows given to a Pyro model or guide, naming the distribution and the variable,
    raised before the data plate opens: also the ZeroDivisionError that ``pyro.plate`` raises there ("size cannot be
    zero"), so that a program catching Pyro's error still catches it."""


class NoClosedFormError(NotImplementedError, ValueError):
    """No analytic value: a distribution without an analytic entropy (a ``Deterministic``), a product with a factor
    conditioned on a variable the product generates, or factors that do not pair up. A NotImplementedError, and the
    ValueError Pixyz raises for the analytic entropy of such a distribution or the analytic KL of a product."""


class NotSupportedError(ValueError, NotImplementedError):
    """A ValueError for what Pixyz refuses with a bare NotImplementedError, saying what would work instead: an
    option that names nothing known (``MMD(..., kernel="laplace")``), an adversarial term of two distributions that
    take no input. Also that NotImplementedError, so that a program falling back on it still catches it."""


class DuplicateSiteError(ValueError, RuntimeError):
    """A ValueError for a second ``pyro.sample`` site of one name in one Pyro trace (a variable drawn twice under
    a user's ``poutine.trace()``), naming the distribution and the variable: also the RuntimeError Pyro raises."""


class ArgumentError(TypeError, ValueError, AttributeError):
    """A TypeError for an argument of the wrong kind (a number where a list of distributions is expected, one
    distribution where a list is, a string where weights are, a tensor where a dict of values is, a ``forward``
    that returns no dict), naming the class and the argument: also the ValueError or AttributeError that Pixyz raises
    there (its own checks, or its code reading ``.var`` or ``.keys()`` of the value), so that a Pixyz program's
    ``except`` still catches it."""


class SizeArgumentError(ArgumentError, ZeroDivisionError):
    """An :class:`ArgumentError` for a size that is not a positive int (``PlanarFlow(0)``, ``PlanarFlow("2")``):
    also the ZeroDivisionError Pixyz's initialization raises for a size of 0."""


class EmptyListError(ValueError, IndexError):
    """A ValueError for an empty list where items are expected (``FlowList([])``): also the IndexError Pixyz's code
    raises reading its first item."""


def error_text(error: BaseException) -> str:
    """``str(error)``, or ``""`` for an exception whose ``__str__`` raises (a user's: it is raised as it is)."""
    try:
        return str(error)
    except Exception:  # noqa: BLE001
        return ""


def error_notes(error: BaseException) -> tuple:
    """``error``'s notes (``()`` when it has none, or when reading them raises)."""
    try:
        return tuple(getattr(error, "__notes__", ()))
    except Exception:  # noqa: BLE001
        return ()


def drop_notes(error: BaseException, drop: Callable[[str], bool]) -> bool:
    """Remove ``error``'s notes for which ``drop`` is true (a note another one replaces); whether any was removed.
    An exception whose notes cannot be changed keeps them (and ``False``)."""
    notes = error_notes(error)
    kept = [n for n in notes if not (isinstance(n, str) and drop(n))]
    if len(kept) == len(notes):
        return False
    try:
        error.__notes__ = kept
    except Exception:  # noqa: BLE001 (an exception that refuses: its notes stay)
        return False
    return True


def add_note(error: BaseException, text: str, key: Any = None) -> None:
    """``error.add_note(text)``, unless the exception cannot take a note (a frozen dataclass, a ``__setattr__`` that
    refuses, ``__notes__`` made a tuple): then the error is raised as it is, never replaced by the note's failure.

    With ``key`` (who notes, e.g. ``("forward", id(distribution))``), the note replaces the one noted under the same
    key before: an exception instance raised again (a network that keeps one) gets one note per layer, the last
    call's, not one more at each call.

    Examples
    --------
    >>> e = ValueError("bad")
    >>> for step in (1, 2, 3):
    ...     add_note(e, f"(in step {step})", key="step")
    >>> e.__notes__
    ['(in step 3)']
    """
    try:
        error.add_note(text)
    except Exception:  # noqa: BLE001 (the user's exception stays the one raised)
        return
    if key is None:
        return
    try:
        own = error.__dict__
        noted = own.get("_dgm_noted")
        if noted is None:
            noted = own["_dgm_noted"] = {}
        old, noted[key] = noted.get(key), text
        notes = error.__notes__
        if old is not None:  # (the earlier one, not the one just added at the end)
            for i in range(len(notes) - 2, -1, -1):
                if notes[i] == old:
                    del notes[i]
                    break
    except Exception:  # noqa: BLE001 (an exception that refuses: the note added, as without a key)
        pass


def clearer(e: BaseException, message: str) -> ValueError:
    """The ValueError to raise ``from e`` with ``message``: a :class:`ShapeError` when ``e`` is a RuntimeError, so
    that ``except RuntimeError`` (torch's and Pixyz's type there) still catches it; a :class:`NotOneHotError` or
    :class:`NotBinaryError` stays one.

    Examples
    --------
    >>> isinstance(clearer(RuntimeError("size mismatch"), "q(z|x): ..."), RuntimeError)
    True
    >>> type(clearer(ValueError("bad scale"), "q(z|x): ...")).__name__
    'ValueError'
    """
    if isinstance(e, (NotOneHotError, NotBinaryError)):
        return type(e)(message)
    return ShapeError(message) if isinstance(e, RuntimeError) else ValueError(message)


_SHAPE_WORDS = ("shape", "size", "dimension", "must match", "broadcast")


class NotOneHotError(ValueError):
    """An integer or bool value scored by a one-hot family holds a vector that is not one-hot (class indices, a
    multi-hot vector): a ``ValueError``, as torch's validation raises for a value out of the support."""


class NotBinaryError(OutOfRangeError):
    """An integer value scored by a Bernoulli holds entries other than 0 and 1 (uint8 pixels 0..255 not scaled):
    Pixyz raises torch's ``RuntimeError`` for any integer value there; float values, any real ones, are scored by
    the cross-entropy as Pixyz scores them."""


def users_own_error(e: BaseException) -> bool:
    """Whether ``e`` is an error a user's code raised itself (a flow's own range check: ``raise RuntimeError("input
    out of range")``), which is re-raised as it is, not one of torch's, Pyro's or pyro_dgm's (raised in their code,
    or a torch operation's shape error, raised from C++ at the user's line), which is reported with what did not fit.
    A text about shapes raised at the user's line is theirs where that line is a ``raise`` statement.

    Examples
    --------
    >>> try:
    ...     raise RuntimeError("input out of range")
    ... except RuntimeError as e:
    ...     users_own_error(e)
    True
    """
    home = type(e).__module__.partition(".")[0]
    if home not in ("builtins", "torch", "pyro", "pyro_dgm"):  # a class of the user's own: theirs, whatever it says
        return True
    if not any(w in error_text(e) for w in _SHAPE_WORDS):
        return _raised_where(e) != "library"
    return raised_by_statement(e)


def raised_by_statement(e: BaseException) -> bool:
    """Whether ``e`` was raised by a ``raise`` statement in the user's code (the instruction its traceback's innermost
    entry, outside torch, Pyro and pyro_dgm, stopped at is a raise: also on a one-line ``if ...: raise``, or in code
    without a source file), not by a torch operation on that line: the user's own error, whatever its text says
    (``raise RuntimeError("batch size must be even")``)."""
    return _raised_where(e) == "raise"


def _raised_where(e: BaseException) -> str:
    """``"library"`` (raised in torch's, Pyro's or pyro_dgm's code, or no traceback), ``"raise"`` (a ``raise``
    statement of the user's) or ``"user"`` (another instruction of the user's: a torch operation raised from C++)."""
    import dis
    import os

    tb = e.__traceback__
    if tb is None:
        return "library"
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    if any(os.path.abspath(code.co_filename).startswith(root) for root in _library_roots()):
        return "library"
    try:
        op = next((i.opname for i in dis.get_instructions(code) if i.offset == tb.tb_lasti), None)
    except Exception:  # noqa: BLE001 (code dis cannot read: taken as an operation's)
        op = None
    return "raise" if op in ("RAISE_VARARGS", "RERAISE") else "user"


def _library_roots() -> tuple[str, ...]:
    """The folders of torch, Pyro and pyro_dgm (each with a trailing separator)."""
    import os

    import pyro
    import torch

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return tuple(os.path.join(os.path.dirname(os.path.abspath(m.__file__)), "") for m in (torch, pyro)) + (
        os.path.join(here, ""),)


def numpy_tensor(owner: Any, name: str | None, v: Any, device: Any = None) -> Any:
    """A numpy array given as the value of ``name`` as a tensor: ``torch.as_tensor`` (its dtype kept, as
    ``torch.from_numpy``) on ``device``; a view torch cannot share (negative strides, ``a[::-1]``) is copied; a dtype
    torch has not (strings, objects) raises a :class:`NotATensorError` naming ``owner`` and the variable.

    Examples
    --------
    >>> import numpy as np
    >>> numpy_tensor("p(x)", "x", np.arange(3.)[::-1])
    tensor([2., 1., 0.], dtype=torch.float64)
    """
    import torch

    try:
        return torch.as_tensor(v, device=device)
    except ValueError:  # negative strides: torch cannot view them, a contiguous copy it can
        import numpy as np

        return torch.as_tensor(np.ascontiguousarray(v), device=device)
    except TypeError as e:
        what = "the value" if name is None else f"the value of {name!r}"
        raise NotATensorError(f"{describe(owner)}: {what} is a numpy array of dtype {getattr(v, 'dtype', '?')}, "
                              f"which torch cannot convert to a tensor; give numbers ({e})") from e


def describe(obj: Any) -> str:
    """The way errors name a distribution or a loss: its class and its formula, e.g. ``Normal p(x|z)``; the class
    alone where the formula cannot be printed (a user's term whose ``_symbol`` is a plain string, which Pixyz runs
    but cannot print in a sum: the error being raised is the one to see, p487)."""
    try:
        text = getattr(obj, "prob_text", None) or getattr(obj, "loss_text", None)
    except Exception:  # noqa: BLE001 (a user's formula that does not print)
        text = None
    return f"{type(obj).__name__} {text}" if text else type(obj).__name__


def sample_batch_n(owner: Any, batch_n: Any) -> int | None:
    """The batch size a ``sample(batch_n=...)`` call asks for, read as Pixyz reads it: any integer (a numpy or
    torch integer too); ``0``, ``False`` and ``-1`` ask for none (Pixyz tests ``if batch_n:``, and ``-1`` keeps the
    inputs' size as in ``expand``), ``0`` with a ``UserWarning`` since no empty batch is drawn; ``True`` is 1.

    Examples
    --------
    >>> import numpy as np
    >>> sample_batch_n("p", np.int64(3)), sample_batch_n("p", -1), sample_batch_n("p", None)
    (3, None, None)
    >>> sample_batch_n("p", -2)
    Traceback (most recent call last):
    ...
    pyro_dgm.utils.checks.OutOfRangeError: str: batch_n must be a positive int (or 0, -1 or None ...), got -2
    """
    if batch_n is None:
        return None
    try:
        n = operator.index(batch_n)
    except TypeError:
        if not (isinstance(batch_n, float) and batch_n == 0):
            raise TypeError(f"{describe(owner)}: batch_n must be an int, got {batch_n!r}") from None
        n = 0
    if n >= 1:
        return n
    if n == 0 and batch_n is not False:
        warnings.warn(f"{describe(owner)}: batch_n={batch_n!r} draws the inputs' batch size (one element without "
                      "inputs), as Pixyz does, not an empty batch", UserWarning, stacklevel=3)
    if n in (0, -1):
        return None
    raise OutOfRangeError(f"{describe(owner)}: batch_n must be a positive int (or 0, -1 or None for the inputs' size), "
                          f"got {batch_n!r}")


def sample_shape_of(owner: Any, sample_shape: Any) -> Any:
    """``sample_shape`` as a ``torch.Size`` (a list, tuple, ``torch.Size`` or numpy array of non-negative ints, as
    Pixyz takes it); anything else raises naming ``owner``: a ``TypeError`` (Pixyz's there), or for a negative size
    an :class:`OutOfRangeError` (also torch's RuntimeError).

    Examples
    --------
    >>> sample_shape_of("p", [3, 2])
    torch.Size([3, 2])
    >>> sample_shape_of("p", 3)
    Traceback (most recent call last):
    ...
    TypeError: str: sample_shape must be a list or tuple of ints (e.g. [3]), got 3
    """
    import torch

    try:
        shape = torch.Size(sample_shape)
    except TypeError:
        raise TypeError(f"{describe(owner)}: sample_shape must be a list or tuple of ints (e.g. [3]), got "
                        f"{sample_shape!r}") from None
    if any(n < 0 for n in shape):
        raise OutOfRangeError(f"{describe(owner)}: sample_shape must hold non-negative sizes, got {list(shape)}")
    return shape


def as_var_list(names: Any, owner: str, arg: str) -> list[str]:
    """Turn ``var``/``cond_var`` into a list of names, or raise ``TypeError`` naming ``owner`` and ``arg``."""
    if names is None:
        return []
    if isinstance(names, str):  # Pixyz iterates it (var="x", cond_var="y" runs there): one variable per character
        if len(names) > 1:
            warnings.warn(f"{owner}: {arg}={names!r} is a string, read as Pixyz reads it: one variable per "
                          f"character, {list(names)}; write {arg}=[{names!r}] for one variable",
                          stacklevel=user_stacklevel())
        names = list(names)
    try:
        out = list(names)
    except TypeError:  # (a number, a 0-d tensor)
        raise TypeError(f"{owner}: {arg} must be a list of variable names, e.g. {arg}=['x'], got "
                        f"{type(names).__name__} {names!r:.60}") from None
    for v in out:
        if not isinstance(v, str):
            raise TypeError(f"{owner}: {arg} must hold non-empty strings, got {v!r}")
        check_var_name(v, owner, arg)
    if len(set(out)) != len(out):
        raise ValueError(f"{owner}: {arg}={out} names a variable twice")
    return out


#: Characters that are the syntax of a formula (``p(x,y|z)``) or end its math block (``$``), and white space: a
#: variable name holding one prints as something else (``var=["x,y"]`` as a joint over ``x`` and ``y``).
_FORMULA_SYNTAX = frozenset(",|()$") | frozenset(" \t\n\r\f\v")


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def user_stacklevel() -> int:
    """The ``stacklevel`` of a warning raised by the caller that points at the first frame outside pyro_dgm (the
    user's line, however many of pyro_dgm's frames lie between)."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    return level


#: The open blocks of each switch (:func:`switched`), by the id of its flag: the flag's value before the first of them
#: opened, and ``(block, value)`` of each in the order opened.
_SWITCHES: dict[int, tuple[bool, list[tuple[object, bool]]]] = {}
_SWITCHES_LOCK = threading.Lock()


def switched(flag: list[bool], enabled: bool) -> Iterator[None]:
    """The body of an opt-in block: ``flag`` (process-wide) set to ``enabled`` within it. When a block ends the
    flag is the value of the latest block still open, else the value it had before the first opened: blocks opened
    in several threads may end in any order (one thread's block ending must not put back the value another thread's
    block set, nor leave it set once all have ended)."""
    block = object()
    with _SWITCHES_LOCK:
        base, blocks = _SWITCHES.setdefault(id(flag), (flag[0], []))
        blocks.append((block, bool(enabled)))
        flag[0] = bool(enabled)
    try:
        yield
    finally:
        with _SWITCHES_LOCK:
            blocks[:] = [b for b in blocks if b[0] is not block]
            flag[0] = blocks[-1][1] if blocks else base
            if not blocks:
                del _SWITCHES[id(flag)]


#: Whether a variable name holding a formula's syntax is refused (see :func:`strict_names`); Pixyz's default: no.
STRICT_NAMES = [False]


@contextlib.contextmanager
def strict_names(enabled: bool = True) -> Iterator[None]:
    """Within the block, a variable name that a formula would print as something else is refused (opt-in; by
    default it warns, as Pixyz runs such programs: see :func:`check_var_name`).

    Examples
    --------
    >>> from pyro_dgm.distributions import Normal
    >>> with strict_names():
    ...     Normal(loc=0., scale=1., var=["a b"])
    Traceback (most recent call last):
    ...
    ValueError: Normal p: var name 'a b' holds ' ', which formulas use as syntax (p(x,y|z)), so it would print as \
something else; use an identifier such as 'a_b'
    """
    yield from switched(STRICT_NAMES, enabled)


def check_var_name(name: str, owner: str, arg: str = "var") -> None:
    """Warn about a variable name that a formula would print as something else (a ``UserWarning``; under
    :func:`strict_names` a ``ValueError``).

    Names are Python identifiers in practice (they are ``forward``'s argument names); every name a Pixyz program
    may use (``z'``, ``x_{t}``, ``h-1``) is taken. Pixyz also runs programs whose names hold the formula's own
    syntax, ``,``, ``|``, ``(``, ``)``, ``$`` and white space, whose formulas then read as something else (``p(x,y)``
    for one variable ``'x,y'``), or unbalanced braces (``'x{'``, whose LaTeX is not valid): those warn.

    Examples
    --------
    >>> check_var_name("x_1", "Normal p", "var")
    >>> with strict_names():
    ...     check_var_name("x,y", "Normal p", "var")
    Traceback (most recent call last):
    ...
    ValueError: Normal p: var name 'x,y' holds ',', which formulas use as syntax (p(x,y|z)), so it would print as \
something else; use an identifier such as 'x_y'
    """
    bad = _FORMULA_SYNTAX.intersection(name)
    if bad or not name or ("{" in name or "}" in name) and not _braces_balanced(name):
        fix = "".join("_" if ch in _FORMULA_SYNTAX or ch in "{}" else ch for ch in name).strip("_") or "x"
        text = (f"{owner}: {arg} name {name!r} holds {sorted(bad)[0]!r}, which formulas use as syntax (p(x,y|z)), so "
                f"it would print as something else; use an identifier such as {fix!r}" if bad else
                f"{owner}: {arg} name {name!r} has unbalanced braces, so its LaTeX text is not valid LaTeX; use an "
                f"identifier such as {fix!r}" if name else
                f"{owner}: {arg} name '' is empty, so formulas would print it as nothing (p()); use an identifier "
                "such as 'x'")
        if STRICT_NAMES[0]:
            raise ValueError(text)
        warnings.warn(text, UserWarning, stacklevel=user_stacklevel())


def _braces_balanced(name: str) -> bool:
    depth = 0
    for ch in name:
        depth += (ch == "{") - (ch == "}")
        if depth < 0:
            return False
    return depth == 0


def check_present(owner: Any, given: Iterable[str], needed: Sequence[str], what: str = "input") -> None:
    """Raise :class:`MissingVariableError` (a ``ValueError``) if a variable of ``needed`` is not among ``given``."""
    given = set(given)
    missing = [v for v in needed if v not in given]
    if missing:
        names = ", ".join(repr(v) for v in missing)
        raise MissingVariableError(f"{describe(owner)}: missing {what} variable{'s' if len(missing) > 1 else ''} "
                                   f"{names}; expected values for {list(needed)}, got {sorted(given, key=repr)}")


#: Whether scored values must match the batch dims too (see :func:`strict_shapes`); Pixyz's default: no.
STRICT_SHAPES = [False]


@contextlib.contextmanager
def strict_shapes(enabled: bool = True) -> Iterator[None]:
    """Within the block, a scored value must also match the batch dims of the other inputs (opt-in).

    By default (Pixyz's behaviour, which Pixyz programs rely on, e.g. one value drawn with batch size 1 scored
    under a batch of conditionals) the batch dims of a value broadcast as torch broadcasts them; only its feature
    dims must be the distribution's. Here a value of batch size 1 (or without a batch dim) scored under a batch
    of parameters is refused too (a :class:`ShapeError`, which is a ValueError). No cost where shapes agree: it is
    read only when they differ.

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.distributions import Normal
    >>> p = Normal(loc="m", scale=1., var=["x"], cond_var=["m"])
    >>> p.get_log_prob({"x": torch.zeros(1, 3), "m": torch.zeros(5, 3)}).shape  # Pixyz's broadcast
    torch.Size([5])
    >>> with strict_shapes():
    ...     p.get_log_prob({"x": torch.zeros(1, 3), "m": torch.zeros(5, 3)})
    Traceback (most recent call last):
    ...
    pyro_dgm.utils.checks.ShapeError: Normal p(x|m): the value of 'x' has shape (1, 3), ...
    """
    yield from switched(STRICT_SHAPES, enabled)


def value_shape_problem(value_shape: Sequence[int], shape: Sequence[int], n_features: int,
                        strict: bool | None = None, summed: bool = True,
                        summed_dims: frozenset[int] | None = None) -> str | None:
    """Why a value of ``value_shape``, scored under parameters of full shape ``shape`` whose last ``n_features``
    dims are feature dims, would be silently broadcast into a wrong number, or ``None`` if it is scored as it should.

    The rule (docs/design.md, "Shapes of scored values"): parameters may broadcast over the value (a dim of size 1
    in ``shape``: a scalar parameter scored on a batch), so each element of the value is scored once; the value's
    feature dims may not broadcast over the parameters' (a size-1 or missing feature dim where the distribution has
    more: the same number would be scored several times). Its batch dims broadcast as in Pixyz (a value of batch
    size 1 under a batch of parameters, extra leading sample dims on either side), unless ``strict`` (default:
    :func:`strict_shapes`): then a value that holds a batch (two dims or more once its leading size-1 dims are
    dropped) may still be scored under each of the parameters' extra leading dims (``x`` of shape ``[B, D]`` under
    ``p(x|z)`` with ``z`` of shape ``[L, B, Z]``), but nothing else of it is broadcast. Plain tuple arithmetic: the
    caller compares the two shapes first. Not ``summed`` (``sum_features=False``: each element of the broadcast
    result is a score of its own), a value's feature dim of size 1 may broadcast too (log q(z_i|x_j) of every pair:
    ``z`` of shape ``[B, 1, Z]`` under parameters of ``[1, B, Z]``); a value that lacks dims still may not.
    ``summed_dims``: the feature dims that are summed (``feature_dims``), as offsets from the right (1: the last);
    the others are not summed.

    Examples
    --------
    >>> value_shape_problem((5, 3), (1, 3), 1) is None, value_shape_problem((2, 5, 3), (5, 3), 1) is None
    (True, True)
    >>> value_shape_problem((5, 1), (5, 3), 1)
    'its dim 1 has size 1 where the distribution has 3 features'
    >>> value_shape_problem((1, 3), (5, 3), 1) is None  # Pixyz's broadcast of a batch of one
    True
    >>> value_shape_problem((1, 3), (5, 3), 1, strict=True)
    'its dim 0 has size 1 where the distribution has a batch of 5'
    >>> value_shape_problem((4, 3), (4, 1, 3), 2)[:61]  # a network's forgotten squeeze: loc of shape (4, 1, 3)
    'it has 2 dims where the distribution has 3 (batch and feature'
    """
    vs, ps = tuple(value_shape), tuple(shape)
    n, m = len(vs), len(ps)
    nf = min(n_features, m)
    for i in range(1, nf + 1):  # feature dims, from the right
        p = ps[-i]
        if i > n:
            if p != 1:
                why = f"it has no dim for the distribution's feature dim {m - i} of size {p}"
                if n >= 2 and vs == ps[m - n:]:  # (data [B, D] under draws of sample_shape=[3, 2], features
                    # [2, B, D]; or an image of one channel under three: the shapes cannot tell them apart)
                    why += (" (if the parameters' leading dims are the sample dims of an input drawn with a "
                            "sample_shape of several dims, which an input given from outside is read with one of, "
                            "give that input with one sample dim: z.flatten(0, 1))")
                return why
            continue
        v = vs[-i]
        if v != p and p != 1 and ((summed if summed_dims is None else i in summed_dims) or v != 1):
            return f"its dim {n - i} has size {v} where the distribution has {p} features"
        if p == 1 and v != 1 and n < m:  # the value lacks dims: its batch dim lines up with a feature dim of size 1
            feats = ps[m - nf:]
            core = feats[next((k for k, d in enumerate(feats) if d != 1), len(feats)):]
            hint = (f"; if the parameters' leading dim of 1 was meant as a batch of one (constants of shape "
                    f"{(1, *core)}), give them shape {core} (or features_shape={list(core)})"
                    if core and len(core) < len(feats) and vs[n - len(core):] == core else "")
            return (f"it has {n} dims where the distribution has {m} (batch and features {feats}), so its dim "
                    f"{n - i} of size {v} lines up with a feature dim of size 1 and each element would be scored "
                    f"against all {v} of them{hint}")
    if strict is None:
        strict = STRICT_SHAPES[0]
    if not strict:  # batch dims: torch's broadcasting, as Pixyz (a mismatch torch refuses is reported here)
        for i in range(nf + 1, min(n, m) + 1):
            v, p = vs[-i], ps[-i]
            if v != p and p != 1 and v != 1:
                return f"its dim {n - i} has size {v} where the distribution has a batch of {p}"
        return None
    core = vs
    while core and core[0] == 1:
        core = core[1:]
    c = len(core)
    for i in range(1, min(nf, c) + 1):  # (the batch of one broadcast, a dim of the rest lines up with a feature
        if ps[-i] == 1 and core[-i] != 1 and c < m:  # dim of size 1: x.unsqueeze(0) for x.unsqueeze(1))
            dims = f"{c} dim{'s' if c != 1 else ''}"
            return (f"without its leading dims of size 1 it has {dims} where the distribution has {m} (batch and "
                    f"features {ps[m - nf:]}), so its dim {n - i} of size {core[-i]} lines up with a feature dim of "
                    f"size 1 and each element would be scored against all {core[-i]} of them")
    for i in range(nf + 1, min(c, m) + 1):
        v, p = core[-i], ps[-i]
        if v != p and p != 1:
            return f"its dim {n - i} has size {v} where the distribution has a batch of {p}"
    if c < 2:  # a value without a batch of its own is not scored under a batch of parameters
        for j in range(m - max(c, nf) - 1, -1, -1):
            if ps[j] != 1:
                k = n - (m - j)
                if k >= 0:
                    return f"its dim {k} has size 1 where the distribution has a batch of {ps[j]}"
                return f"it has no dim for the distribution's batch dim {j} of size {ps[j]}"
    return None


def value_shape_doubt(value_shape: Sequence[int], shape: Sequence[int], n_features: int) -> str | None:
    """Why a value that :func:`value_shape_problem` lets pass (Pixyz scores it so) is likely laid out wrong, or
    ``None``: its batch dim of size 1 is broadcast over the parameters' batch of B while a dim of size B of it lines
    up with a feature dim of size 1 (``x.unsqueeze(0)`` of shape ``(1, B, 8, 8)`` under parameters of
    ``(B, 1, 8, 8)``, ``z.T`` under a one-dim latent): each of the B scores then sums all B values.

    Examples
    --------
    >>> value_shape_doubt((1, 5, 8, 8), (5, 1, 8, 8), 3)[:40]
    'its dim 0 of size 1 is broadcast over th'
    >>> value_shape_doubt((5, 1, 8, 8), (5, 1, 8, 8), 3) is None, value_shape_doubt((1, 3), (5, 1), 1) is None
    (True, True)
    """
    vs, ps = tuple(value_shape), tuple(shape)
    n, m = len(vs), len(ps)
    nf = min(n_features, m)
    if n != m:
        return None
    for j in range(m - nf):
        if vs[j] == 1 and ps[j] != 1:
            for i in range(m - nf, m):
                if ps[i] == 1 and vs[i] == ps[j]:
                    return (f"its dim {j} of size 1 is broadcast over the distribution's batch of {ps[j]} while its "
                            f"dim {i} of size {vs[i]} lines up with a feature dim of size 1, so each of the "
                            f"{ps[j]} scores sums all {vs[i]} of its values (as Pixyz scores it); if dim {i} is the "
                            f"batch, move it to dim {j} (pyro_dgm.utils.checks.strict_shapes() refuses this)")
    return None


def keyed_values(x: Any) -> dict[str, Any] | None:
    """A dict of the values of an object that Pixyz reads by its keys (``keys()`` and ``[k]``) but that is no
    ``Mapping`` (a user's own batch class, a pandas row), or ``None`` for anything else (a tensor, a list).

    Examples
    --------
    >>> class Batch:
    ...     def keys(self): return ["x"]
    ...     def __getitem__(self, k): return 1.0
    >>> keyed_values(Batch()), keyed_values([1.0])
    ({'x': 1.0}, None)
    """
    if hasattr(x, "keys") and hasattr(x, "__getitem__") and not hasattr(x, "dim"):  # (not a tensor)
        return {k: x[k] for k in x.keys()}
    return None


def ordered_union(*lists: Sequence[str]) -> list[str]:
    """The names of all ``lists``, each once, in order of first appearance.

    Examples
    --------
    >>> ordered_union(["x", "z"], ["z", "y"], ["x"])
    ['x', 'z', 'y']
    """
    out: list[str] = []
    for names in lists:
        out += [n for n in names if n not in out]
    return out


class LayoutError(TypeError, NotImplementedError):
    """A TypeError for a tensor of a kind the densities and networks do not take (a sparse tensor, a
    ``torch.masked.MaskedTensor``): also the NotImplementedError torch raises there for a sparse one."""


def unusual_tensor(x: Any, name: str = "x") -> str:
    """What kind of tensor ``x`` is when it is not a dense one, and how to make it one (``"a sparse_coo tensor"``,
    ``"a nested tensor"``, ``"a quantized tensor"``, ``"a MaskedTensor"``, each with its conversion); ``""`` for a
    dense tensor."""
    import torch

    if x.is_nested:
        return f"a nested tensor ({name}.to_padded_tensor(0.0) makes a dense one)"
    if x.layout is not torch.strided:
        return f"a {str(x.layout).rpartition('.')[2]} tensor ({name}.to_dense() makes a dense one)"
    if x.is_quantized:
        return f"a quantized tensor ({name}.dequantize() makes a dense one)"
    if type(x).__name__ == "MaskedTensor":
        return f"a MaskedTensor ({name}.get_data() is its values)"
    return ""


class SamplerDTypeError(DTypeError, NotImplementedError):
    """A parameter of an integer dtype that torch's sampler has no kernel for: a :class:`DTypeError`, and the
    NotImplementedError torch raises there (Pixyz's)."""


def non_float_param(base: Any, depth: int = 2) -> tuple[str, Any] | None:
    """The first parameter of a torch distribution (or of one it wraps: a Beta's Dirichlet, a relaxed family's
    base) held as an integer or bool tensor, as ``(name, dtype)``; ``None`` if there is none."""
    import torch

    for k, v in vars(base).items():
        if (isinstance(v, torch.Tensor) and not v.is_floating_point() and not v.is_complex()
                and k in getattr(base, "arg_constraints", {})):
            return k, v.dtype
    for v in vars(base).values() if depth else ():
        for inner in v if isinstance(v, (list, tuple)) else (v,):  # (a mixture's components)
            if isinstance(inner, torch.distributions.Distribution):
                found = non_float_param(inner, depth - 1)
                if found is not None:
                    return found
    return None


def dtype_matter(e: BaseException) -> bool:
    """Whether torch's error ``e`` is one of a tensor's dtype: a kernel missing for it (``"normal_kernel_cpu" not
    implemented for 'Long'``), ``torch.finfo`` of an integer dtype, or arithmetic torch refuses on bools."""
    text = str(e)
    return ("not implemented for" in text or "floating point" in text or "with a bool tensor" in text
            or "bool tensor is not supported" in text)


def refuse_param_dtype(owner: Any, e: BaseException, base: Any, doing: str) -> None:
    """Raise :func:`param_dtype_error` from ``e`` where torch's error ``e`` is one of a dtype (:func:`dtype_matter`)
    and a parameter of ``base``, a torch distribution, is of an integer or bool dtype (:func:`non_float_param`);
    return otherwise (the caller goes on with ``e``)."""
    found = non_float_param(base) if dtype_matter(e) else None
    if found is not None:
        raise param_dtype_error(owner, e, found, doing) from e


def param_dtype_error(owner: Any, e: BaseException, found: tuple[str, Any], doing: str) -> Exception:
    """The error of ``doing`` (``"draw 'x'"``, ``"score 'x'"``, ...) that ``e``, torch's, raised because the
    parameter ``found`` is of an integer or bool dtype: it names the distribution, the parameter and the fix, and
    is also the class of torch's error (Pixyz's programs see that one)."""
    name, dtype = found
    cls = SamplerDTypeError if isinstance(e, NotImplementedError) else DTypeError
    return cls(f"{describe(owner)}: cannot {doing}: its parameter {name!r} is of dtype {dtype}, which torch's "
               f"distribution does not take there; give the value it comes from as floats (.float()) (torch: {e})")
