"""Terms that are not built from a distribution: :class:`ValueLoss`, :class:`Parameter`, :class:`ConstantVar`."""
from __future__ import annotations

import numbers
from typing import Any, Mapping

import torch
from torch import Tensor

from pyro_dgm.losses.base import PREC_ATOM, PREC_NEG, Loss
from pyro_dgm.utils.checks import ArgumentError

__all__ = ["ValueLoss", "Parameter", "ConstantVar", "LossArgumentError", "DimsArgumentError"]


class LossArgumentError(TypeError, ValueError):
    """An argument of the wrong type for a loss (``loss + "y"``, ``Parameter(["x"])``): a TypeError, and also the
    ValueError that Pixyz raises there, so Pixyz code that catches ValueError still catches it."""


class DimsArgumentError(LossArgumentError, RuntimeError):
    """Dims to sum over that are not ints (``KullbackLeibler(q, p, dim="a")``): also the RuntimeError that torch 2.11
    and older raise under Pixyz there (a named dim that the tensor does not have)."""


class _InputSet(set):  # type: ignore[type-arg]
    """A set of variable names (Pixyz's ``ConstantVar.input_var`` is a set) that iterates and prints in a fixed order:
    the base loss's, so that a formula built on it lists its input variables in the same order on every run."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(names)
        self._dgm_order = list(names)

    def __iter__(self) -> Any:
        return iter([n for n in self._dgm_order if n in self])  # (a name removed since is not listed)

    def __repr__(self) -> str:
        return "{" + ", ".join(repr(n) for n in self) + "}" if self else "set()"


def _number_text(v: Any) -> str:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, numbers.Integral):
        return str(v)
    if isinstance(v, numbers.Real):
        return f"{float(v):g}"
    return str(v)


def _numbers(x: Any) -> bool:
    """Whether ``x`` is a (nested) list or tuple of numbers, or a numpy array of them, which Pixyz's ``ValueLoss``
    keeps as their tensor."""
    if not isinstance(x, (list, tuple)) and not _is_array(x):
        return False
    try:
        torch.tensor(x, dtype=torch.float)
    except (TypeError, ValueError, RuntimeError):
        return False
    return True


def _is_array(x: Any) -> bool:
    return type(x).__module__ == "numpy" and hasattr(x, "shape") and not isinstance(x, numbers.Number)


def _roundings(given: Any, dtype: torch.dtype) -> set[Any]:
    """The values a buffer made from the number ``given`` may hold, unchanged but for casts, in ``dtype``: ``given``
    rounded to ``dtype``, and its float32 buffer's value (rounded again through a half dtype, ``loss.half()``) cast
    to ``dtype`` (``loss.double()``)."""
    first = torch.tensor(given, dtype=torch.float)
    out = {torch.tensor(given, dtype=dtype).item(), first.to(dtype).item()}
    if first.is_floating_point():
        out.update(first.to(half).to(dtype).item() for half in (torch.float16, torch.bfloat16))
    return out


#: a constant of more elements than this prints its first and last three, as numpy summarizes an array
_SHOWN = 10


def _tensor_text(v: Tensor) -> str:
    """The values of a constant of several elements as the text of a numpy array, which Pixyz prints for the same
    values given as one (``\\mathtt{\\text{[1. 2.]}}``), summarized beyond :data:`_SHOWN` elements, on one line."""
    import numpy as np
    import sympy

    if v.is_meta:  # (no values to show)
        return rf"\mathtt{{\text{{meta tensor of shape {tuple(v.shape)}}}}}"
    a = v.detach()
    if a.layout != torch.strided:  # (a sparse tensor: numpy takes its dense values)
        a = a.to_dense()
    a = a.cpu()
    if a.dtype in (torch.bfloat16, torch.complex32) or a.is_quantized:  # (no numpy dtype)
        a = a.dequantize() if a.is_quantized else a.to(torch.complex64 if a.is_complex() else torch.float)
    with np.printoptions(threshold=_SHOWN):
        text = sympy.latex(a.resolve_conj().resolve_neg().numpy())
    return " ".join(line.strip() for line in text.splitlines())  # (one line: the rows of a matrix side by side)


class ValueLoss(Loss):
    """A constant: a number or a tensor. Numbers and tensors in loss arithmetic become a ``ValueLoss``.

    A number prints as itself; a one-element tensor prints as its value; a larger tensor prints its values as
    numpy prints an array (Pixyz's text for them given as a numpy array: ``\\mathtt{\\text{[1. 2.]}}``; the first
    and last three beyond ten), and is a symbol of its own in sympy's arithmetic: ``a - b`` of two such constants
    is not printed as 0, nor merged with a ``Parameter``.

    Parameters
    ----------
    loss1 : number, (nested) list of numbers, numpy array, or Tensor
        The value (Pixyz's parameter name), as ``original_value``; ``value`` is its float32 buffer, as in Pixyz:
        ``beta.value.fill_(0.5)`` anneals a coefficient in place, and a tensor given is copied (no gradient flows
        to it, and later in-place changes of it are not seen). The text shows the current value (Pixyz's shows
        ``original_value``).

    Examples
    --------
    >>> loss = ValueLoss(2)
    >>> print(loss, loss.eval())
    2 tensor(2.)
    """

    def __init__(self, loss1: Any) -> None:
        if not (isinstance(loss1, (numbers.Number, Tensor)) or _numbers(loss1)):
            raise TypeError(f"ValueLoss: loss1 (the value) must be a number, a (nested) list or array of numbers or a "
                            f"tensor, got {type(loss1).__name__}")
        super().__init__([])
        self.original_value = loss1
        if isinstance(loss1, Tensor):  # Pixyz's torch.tensor(loss1, dtype=torch.float): a float32 copy (a flag's
            # 1 or 0 too), without the tensor's gradient, that a later in-place change of the tensor does not reach
            self.register_buffer("value", loss1.detach().to(torch.float, copy=True))
        else:  # a float32 buffer, as Pixyz's: in the state dict, moved by .to(), changed in place by fill_()
            self.register_buffer("value", torch.tensor(loss1, dtype=torch.float))

    @classmethod
    def _dgm_kept(cls, value: Tensor) -> "ValueLoss":
        """A tensor in loss arithmetic (``kl * w``: pyro_dgm's extension, Pixyz's arithmetic refuses tensors), kept
        as given: a gradient reaches it, its dtype stays, and a later in-place change of it is seen."""
        loss = cls(0)
        del loss._buffers["value"]
        loss.original_value = value
        loss.value = value
        return loss

    @property
    def is_number(self) -> bool:
        """Whether the value prints as a number (a Python number or a one-element tensor)."""
        return not isinstance(self.value, Tensor) or self.value.numel() == 1

    def _dgm_shown(self) -> Any:
        """The number the text shows: the one given, unless the buffer was changed since (``fill_``...)."""
        v, given = self.value, self.original_value
        if not isinstance(v, Tensor):
            return v
        if v.numel() != 1:
            return None
        now = v.item()
        if not isinstance(given, Tensor) and now in _roundings(given, v.dtype):
            # 2 prints as 2, not as its float32 buffer's 2.0; a bool (Pixyz's flag times a term) as 1 or 0; 0.1 as
            # 0.1 after loss.double() too (the float32 buffer's 0.100000001 cast), as Pixyz prints original_value
            return int(given) if isinstance(given, bool) else given
        return now

    @property
    def is_negative_number(self) -> bool:
        """Whether the value prints as a negative number."""
        if not self.is_number:
            return False
        v = self._dgm_shown()
        return isinstance(v, numbers.Real) and v < 0

    @property
    def _dgm_prec(self) -> int:  # type: ignore[override]
        return PREC_NEG if self.is_negative_number else PREC_ATOM

    @property
    def _symbol(self) -> Any:
        if self.is_number:  # a number, as Pixyz's ValueLoss (sympy arithmetic makes it an Integer or a Float)
            return self._dgm_shown()
        if self._dgm_given_sequence():
            return super()._symbol
        import sympy  # a tensor of several values: a symbol of its own, that sympy does not merge with another
        # constant's, or with a Parameter, of the same text (a - b of two vectors is not 0); the same one each time
        # for this constant and text (v - v is 0)
        text = self.latex
        kept = self.__dict__.get("_dgm_dummy")
        if kept is None or kept[0] != text:
            kept = self.__dict__["_dgm_dummy"] = (text, sympy.Dummy(text))
        return kept[1]

    def _dgm_given_sequence(self) -> bool:
        return isinstance(self.original_value, (list, tuple)) or _is_array(self.original_value)

    @property
    def latex(self) -> str:
        if self._dgm_given_sequence():  # Pixyz's text: sympy's of the list or array, [1.0, 2.0]
            import sympy

            return sympy.latex(self.original_value)
        return _tensor_text(self.value) if not self.is_number else _number_text(self._dgm_shown())

    def _dgm_value(self, values: dict[str, Any], **kwargs: Any) -> Any:
        return self.value  # a number's float32 buffer, as Pixyz's (a float64 formula sees it rounded, as there)


class Parameter(Loss):
    """A variable of ``x_dict`` as a loss term, e.g. a coefficient given at evaluation time.

    Parameters
    ----------
    input_var : str
        The variable's name.

    Examples
    --------
    >>> beta = Parameter("beta")
    >>> print(beta * 2, float((beta * 2).eval({"beta": 3.})))  # sympy prints the symbol beta as a Greek letter
    2 \\beta 6.0
    """

    def __init__(self, input_var: str) -> None:
        if not isinstance(input_var, str) or not input_var:
            raise LossArgumentError(f"Parameter: input_var must be a variable name (a string), got {input_var!r}")
        super().__init__([input_var])

    @property
    def latex(self) -> str:
        return self._input_var[0]

    @property
    def _symbol(self) -> Any:
        import sympy

        return sympy.Symbol(self._input_var[0])

    def _dgm_value(self, values: dict[str, Any], **kwargs: Any) -> Any:
        return values[self._input_var[0]]


class ConstantVar(Loss):
    """A loss with some input variables fixed to constants; it prints as the loss.

    Parameters
    ----------
    base_loss : Loss
    constant_dict : dict
        Values by variable name; these variables are no longer inputs.

    Examples
    --------
    >>> loss = ConstantVar(Parameter("x") * 2, {"x": 1.5})
    >>> print(loss, loss.input_var, float(loss.eval()))
    2 x set() 3.0
    """

    def __init__(self, base_loss: Loss, constant_dict: Mapping[str, Any]) -> None:
        if not isinstance(base_loss, Loss):
            raise ArgumentError(f"ConstantVar: base_loss must be a Loss, got {type(base_loss).__name__}")
        if not isinstance(constant_dict, Mapping):
            raise ArgumentError(f"ConstantVar: constant_dict must be a dict, got {type(constant_dict).__name__}")
        super().__init__([v for v in base_loss.input_var if v not in constant_dict])
        self.base_loss = base_loss
        self.constant_dict = dict(constant_dict)

    @property
    def input_var(self) -> set[str]:  # type: ignore[override]
        """The base loss's input variables but the constants: a set, as in Pixyz (iterated in the base loss's
        order)."""
        return _InputSet(self._input_var)

    @property
    def _dgm_prec(self) -> int:  # type: ignore[override]
        return self.base_loss._dgm_prec

    @property
    def latex(self) -> str:
        return self.base_loss.latex

    @property
    def _symbol(self) -> Any:
        return self.base_loss._symbol

    def forward(self, x_dict: dict[str, Any], **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        inputs = dict(x_dict)  # (called directly, loss(x_dict), every given value comes back, as in Pixyz)
        inputs.update(self.constant_dict)
        # its inputs and its constants join the samples, as in Pixyz (eval(..., return_dict=True) of a ConstantVar
        # reports the constants)
        return self.base_loss.eval(inputs, return_dict=True, return_all=True, **kwargs)
