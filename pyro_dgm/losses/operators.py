r"""Operators on losses: ``+ - * / **``, unary ``-``, ``abs``, ``mean()``, ``sum()``, ``detach()``, min and max.

Each operator is a small class whose value is the operation on its operands' values. It has two texts: ``str(loss)``
(``loss_text``) is Pixyz's, ``sympy.latex`` of the operands' sympy expressions combined (sympy orders and simplifies
sums and products, so ``reconst - kl`` prints ``- D_{KL} ... - \mathbb{E} ...``, as Pixyz prints it), and
:attr:`~pyro_dgm.losses.base.Loss.latex` joins the operands' texts in the order the user wrote them, with parentheses
where precedence needs them.
"""
from __future__ import annotations

import contextlib
import numbers
from typing import Any, Iterator, NoReturn

import torch
from torch import Tensor

from pyro_dgm.losses.base import (_LOSS_EVAL, PREC_ADD, PREC_ATOM, PREC_MUL, PREC_NEG, Loss, ordered_union,
                                  record_own_eval)
from pyro_dgm.losses.special import LossArgumentError, Parameter, ValueLoss
from pyro_dgm.utils.checks import ArgumentError, ShapeError, switched
from pyro_dgm.utils.shapes import broadcast_shape


__all__ = ["LossOperator", "LossSelfOperator", "AddLoss", "SubLoss", "MulLoss", "DivLoss", "PowLoss", "MinLoss",
           "MaxLoss", "NegLoss", "AbsLoss", "BatchMean", "BatchSum", "Detach", "strict_broadcasting"]

_STRICT = [False]  # whether binary operators refuse to broadcast two values into a shape neither has


@contextlib.contextmanager
def strict_broadcasting(enabled: bool = True) -> Iterator[None]:
    """Within the block, a binary operator whose operands' values would broadcast to a shape neither has (``(N,)``
    with ``(N, 1)`` gives ``(N, N)``: a silent outer product of two per-batch-element terms) raises a ValueError
    naming both terms.

    Off by default, as in Pixyz, which broadcasts (after ``.mean()`` a sum or a difference of such terms has the value
    intended; a product has not). Turn it on to find such a mistake.

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.losses import Parameter
    >>> a, b = Parameter("a"), Parameter("b")
    >>> values = {"a": torch.zeros(3), "b": torch.ones(3, 1)}
    >>> (a + b).eval(values).shape  # Pixyz's broadcasting
    torch.Size([3, 3])
    >>> with strict_broadcasting():
    ...     (a + b).eval(values)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
     ...
    ValueError: AddLoss: cannot combine a of shape (3,) with b of shape (3, 1): broadcasting would give (3, 3), ...
    """
    yield from switched(_STRICT, enabled)


def _as_loss(x: Any, op: str, other: Any) -> Loss:
    if isinstance(x, Loss):
        return x
    if isinstance(x, Tensor) and x.dtype != torch.bool:  # (an extension: Pixyz's arithmetic refuses tensors)
        return ValueLoss._dgm_kept(x)
    if isinstance(x, (numbers.Number, Tensor)):  # (a bool too: Pixyz's True is 1, as in Python)
        return ValueLoss(x)
    raise LossArgumentError(f"{op}: cannot combine a loss with {type(x).__name__} ({x!r}); a loss combines with "
                            f"losses, numbers and tensors (the other operand is {type(other).__name__})")


def _tensors(a: Any, b: Any) -> tuple[Tensor, Tensor]:
    """Both values as tensors; a number takes the dtype and device of the other value."""
    like = a if isinstance(a, Tensor) else b if isinstance(b, Tensor) else None
    if like is None:
        return torch.as_tensor(a, dtype=torch.get_default_dtype()), torch.as_tensor(b, dtype=torch.get_default_dtype())
    conv = [v if isinstance(v, Tensor) else torch.as_tensor(v, dtype=like.dtype, device=like.device) for v in (a, b)]
    return conv[0], conv[1]


def _check_broadcast(op: Loss, v1: Tensor, v2: Tensor) -> None:
    """Raise if combining the two values would give a shape neither has, e.g. ``(N,)`` with ``(N, 1)`` -> ``(N, N)``:
    a silent outer product of two per-batch-element terms."""
    try:
        shape = broadcast_shape(v1.shape, v2.shape)
    except ValueError:
        shape = None
    if shape != v1.shape and shape != v2.shape:
        raise ValueError(f"{type(op).__name__}: cannot combine {_formula(op.loss1)} of shape {tuple(v1.shape)} "
                         f"with {_formula(op.loss2)} of shape {tuple(v2.shape)}: "
                         + (f"broadcasting would give {tuple(shape)}, a shape neither term has"
                            if shape is not None else "the shapes do not broadcast")
                         + "; reduce one of them (.mean(), .sum()) or give both the same batch shape")


def _formula(loss: Loss | None, attr: str = "latex") -> str:
    """An operand's formula (``latex`` or ``loss_text``) for an error; "None" for an operand set to ``None`` (it
    counts as 0), and the class of one whose formula fails because it holds such an operand (Pixyz cannot print it
    either)."""
    if loss is None:
        return "None"
    try:
        return getattr(loss, attr)
    except AttributeError:
        return type(loss).__name__


def _operand_text(loss: Loss | None, value: Any) -> str:
    """How an error names an operand: its formula (Pixyz's text) and its value's shape or type (an operand set to
    ``None``, which counts as 0: "None")."""
    if isinstance(loss, ValueLoss) and not loss.is_number:
        text = f"the tensor operand {loss.loss_text}"
    elif isinstance(loss, Parameter):
        text = f"Parameter {loss.input_var[0]!r}"
    else:
        text = _formula(loss, "loss_text")
    if isinstance(value, Tensor):
        return f"{text} of shape {tuple(value.shape)}"
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        return f"{text} (the number {value!r})"
    return f"{text} (a {type(value).__name__} {value!r:.60})"


def _raise_operation_error(op: Loss, error: Exception, values: tuple[Any, ...], operands: tuple[Loss, ...],
                           verb: str) -> NoReturn:
    """Re-raise torch's error of an operator on its operands' values (the error path only) as one that names the
    operator, each term (its formula) and its value's shape: a :class:`~pyro_dgm.utils.checks.ShapeError` (also the
    RuntimeError torch raises, and Pixyz with it) for values that do not fit, a
    :class:`~pyro_dgm.losses.special.LossArgumentError` (also the TypeError torch raises) for a value that is
    neither a tensor nor a number (a :class:`~pyro_dgm.losses.special.Parameter` given a string)."""
    name = type(op).__name__
    texts = [_operand_text(loss, v) for loss, v in zip(operands, values)]
    what = f"{name}: cannot {verb} " + " with ".join(texts)
    cause = f"{type(error).__name__}: {error}"
    tensors = [v for v in values if isinstance(v, Tensor)]
    if not all(isinstance(v, (Tensor, numbers.Number)) and not isinstance(v, bool) for v in values):
        raise LossArgumentError(f"{what}: a term's value must be a tensor or a number ({cause})") from error
    if isinstance(error, RuntimeError):
        if len(tensors) == 2:
            try:
                broadcast_shape(tensors[0].shape, tensors[1].shape)
            except ValueError:
                raise ShapeError(f"{what}: the shapes do not broadcast; reduce one of them (.mean(), .sum()) or give "
                                 f"both the same batch shape ({cause})") from error
            devices = {str(t.device) for t in tensors}
            if len(devices) > 1:
                raise ShapeError(f"{what}: the values are on different devices ({', '.join(sorted(devices))}); "
                                 f"move the data or the distributions to one device ({cause})") from error
        raise ShapeError(f"{what} ({cause})") from error
    if isinstance(error, (TypeError, ValueError)):
        raise LossArgumentError(f"{what} ({cause})") from error
    raise error


def _reduce(v: Any, how: str) -> Any:
    """``v.mean()``, ``v.sum()`` or ``v.detach()`` of a tensor, or of a numpy array a user's term returned (as Pixyz
    calls it: ``.mean()`` of an array is its mean); other values (a number) as they are."""
    if isinstance(v, Tensor) or (type(v).__module__ == "numpy" and hasattr(v, how)):
        return getattr(v, how)()
    return v


def _sym(text: str) -> Any:
    import sympy

    return sympy.Symbol(text)


def _paren(text: str) -> str:
    return rf"\left({text}\right)"


def _wrap(loss: Loss, below: int) -> str:
    """The operand's text, in parentheses if its precedence is below ``below``."""
    return _paren(loss.latex) if loss._dgm_prec < below else loss.latex


def _operand_value(loss: Loss, values: dict[str, Any], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """An operand's value and samples (``eval(..., return_dict=True, return_all=False)``)."""
    out = loss.eval(values, return_dict=True, return_all=False, **kwargs)
    if type(loss).eval is not _LOSS_EVAL:  # a class's own eval: the value it gives the formula is the term's
        record_own_eval(loss, out[0])
    return out


class LossOperator(Loss):
    """Base of the binary operators: two operands (losses, numbers or tensors) evaluated on the same values."""

    def __init__(self, loss1: Any, loss2: Any) -> None:
        name = type(self).__name__
        if loss2 is None and isinstance(loss1, Loss):
            loss2 = 0  # Pixyz: a missing second operand counts as 0 (its VAE adds regularizer=None so)
        a, b = _as_loss(loss1, name, loss2), _as_loss(loss2, name, loss1)
        super().__init__(ordered_union(a.input_var, b.input_var))
        self.loss1, self.loss2 = a, b

    @property
    def operands(self) -> tuple[Loss, ...]:
        """The operands, in order (not one set to ``None`` or deleted since: evaluating raises for a deleted one,
        as under Pixyz, and counts one set to ``None`` as 0)."""
        m = self._modules  # (not the attributes: an AttributeError raised in a property is hidden by nn.Module's)
        return tuple(x for x in (m.get("loss1"), m.get("loss2")) if x is not None)

    def _dgm_both(self, values: dict[str, Any], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor, dict[str, Any]]:
        a, b = self.loss1, self.loss2  # (an operand set to None after the operator was made: 0, as under Pixyz)
        v1, s1 = (0, {}) if a is None else _operand_value(a, values, kwargs)
        v2, s2 = (0, {}) if b is None else _operand_value(b, values, kwargs)
        if _STRICT[0] and isinstance(v1, Tensor) and isinstance(v2, Tensor) and v1.shape != v2.shape:
            _check_broadcast(self, v1, v2)
        s1.update(s2)
        return v1, v2, s1

    def _dgm_fail(self, error: Exception, v1: Any, v2: Any, verb: str = "combine") -> NoReturn:
        """Raise the clear form of torch's ``error`` combining the two values (the error path only)."""
        _raise_operation_error(self, error, (v1, v2), (self.loss1, self.loss2), verb)


class AddLoss(LossOperator):
    """``a + b``; adding a negated term prints as ``a - b``.

    Examples
    --------
    >>> from pyro_dgm.losses import Parameter
    >>> x = Parameter("x")
    >>> print(x + 2, "|", x + (-x))  # Pixyz's text: sympy simplifies
    x + 2 | 0
    >>> (x + (-x)).latex  # the formula as written
    'x - x'
    >>> float((x + 2).eval({"x": 3.}))
    5.0
    """

    _dgm_prec = PREC_ADD

    @property
    def _symbol(self) -> Any:
        return self.loss1._symbol + self.loss2._symbol

    @property
    def latex(self) -> str:
        b = self.loss2
        if isinstance(b, NegLoss):
            return f"{self.loss1.latex} - {_wrap(b.loss1, PREC_NEG + 1)}"
        if isinstance(b, ValueLoss) and b.is_negative_number:
            return f"{self.loss1.latex} - {ValueLoss(-b.value).latex}"
        return f"{self.loss1.latex} + {_wrap(b, PREC_NEG + 1)}"

    def forward(self, x_dict: dict[str, Any], **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        v1, v2, s = self._dgm_both(x_dict, kwargs)
        try:
            return v1 + v2, s
        except (RuntimeError, TypeError, ValueError) as e:
            self._dgm_fail(e, v1, v2)


class SubLoss(LossOperator):
    """``a - b``.

    Examples
    --------
    >>> from pyro_dgm.losses import Parameter
    >>> x, y = Parameter("x"), Parameter("y")
    >>> print(x - (y - 2), "|", (x - y) - 2)
    x - y + 2 | x - y - 2
    >>> print((x - (y - 2)).latex)
    x - \\left(y - 2\\right)
    >>> float((2 - x).eval({"x": 4.}))
    -2.0
    """

    _dgm_prec = PREC_ADD

    @property
    def _symbol(self) -> Any:
        return self.loss1._symbol - self.loss2._symbol

    @property
    def latex(self) -> str:
        return f"{self.loss1.latex} - {_wrap(self.loss2, PREC_NEG + 1)}"

    def forward(self, x_dict: dict[str, Any], **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        v1, v2, s = self._dgm_both(x_dict, kwargs)
        try:
            return v1 - v2, s
        except (RuntimeError, TypeError, ValueError) as e:
            self._dgm_fail(e, v1, v2)


class MulLoss(LossOperator):
    r"""``a * b``, printed as ``a b`` (``a \cdot b`` when ``b`` prints with a number first).

    Examples
    --------
    >>> from pyro_dgm.losses import Parameter
    >>> x, y = Parameter("x"), Parameter("y")
    >>> print(2 * (x + y), "|", x * 2, "|", -x * y)  # Pixyz's text (sympy's)
    2 x + 2 y | 2 x | - x y
    >>> print((2 * (x + y)).latex, "|", (x * 2).latex, "|", (-x * y).latex)  # as written
    2 \left(x + y\right) | x \cdot 2 | \left(- x\right) y
    >>> float((2 * x).eval({"x": 4.}))
    8.0
    """

    _dgm_prec = PREC_MUL

    @property
    def _symbol(self) -> Any:
        return self.loss1._symbol * self.loss2._symbol

    @property
    def latex(self) -> str:
        a, b = self.loss1, self.loss2
        left = _wrap(a, PREC_MUL)
        right = _wrap(b, PREC_MUL)
        if isinstance(b, ValueLoss) and b.is_number or right[:1].isdigit() or right[:1] == ".":  # (2 \cdot 3 d:
            return rf"{left} \cdot {right}"  # side by side, two numbers would read as one, 23)
        return f"{left} {right}"

    def forward(self, x_dict: dict[str, Any], **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        v1, v2, s = self._dgm_both(x_dict, kwargs)
        try:
            return v1 * v2, s
        except (RuntimeError, TypeError, ValueError) as e:
            self._dgm_fail(e, v1, v2)


class DivLoss(LossOperator):
    r"""``a / b``, printed as ``\frac{a}{b}``.

    Examples
    --------
    >>> from pyro_dgm.losses import Parameter
    >>> x = Parameter("x")
    >>> print(2 / x, "|", x / 2)
    \frac{2}{x} | \frac{x}{2}
    >>> float((2 / x).eval({"x": 4.}))
    0.5
    """

    _dgm_prec = PREC_ATOM

    @property
    def _symbol(self) -> Any:
        return self.loss1._symbol / self.loss2._symbol

    @property
    def latex(self) -> str:
        return rf"\frac{{{self.loss1.latex}}}{{{self.loss2.latex}}}"

    def forward(self, x_dict: dict[str, Any], **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        v1, v2, s = self._dgm_both(x_dict, kwargs)
        try:
            return v1 / v2, s
        except (RuntimeError, TypeError, ValueError) as e:
            self._dgm_fail(e, v1, v2)


class PowLoss(LossOperator):
    r"""``a ** b``, printed as ``a^{b}``.

    Examples
    --------
    >>> from pyro_dgm.losses import Parameter
    >>> x = Parameter("x")
    >>> print((x ** 2).latex, "|", ((x + 1) ** 2).latex, "|", (2 ** x).latex, "|", ((x ** 2) ** 3).latex)
    x^{2} | \left(x + 1\right)^{2} | 2^{x} | \left(x^{2}\right)^{3}
    >>> float(((x + 1) ** 2).eval({"x": 2.}))
    9.0
    """

    _dgm_prec = PREC_ATOM

    @property
    def _symbol(self) -> Any:
        return self.loss1._symbol ** self.loss2._symbol

    @property
    def latex(self) -> str:
        base = self.loss1  # (a power as the base is parenthesized too: a^{b}^{c} is no formula)
        text = _paren(base.latex) if isinstance(base, PowLoss) else _wrap(base, PREC_ATOM)
        return f"{text}^{{{self.loss2.latex}}}"

    def forward(self, x_dict: dict[str, Any], **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        v1, v2, s = self._dgm_both(x_dict, kwargs)
        try:
            return v1 ** v2, s
        except (RuntimeError, TypeError, ValueError) as e:
            self._dgm_fail(e, v1, v2)


class MinLoss(LossOperator):
    r"""The element-wise minimum of two losses, :math:`min(a, b)`.

    Examples
    --------
    >>> from pyro_dgm.losses import ValueLoss
    >>> loss = MinLoss(ValueLoss(3), ValueLoss(1))
    >>> print(loss, float(loss.eval()))
    min \left(3, 1\right) 1.0
    """

    @property
    def _symbol(self) -> Any:
        return _sym("min \\left({}, {}\\right)".format(self.loss1.loss_text, self.loss2.loss_text))

    @property
    def latex(self) -> str:
        return rf"min \left({self.loss1.latex}, {self.loss2.latex}\right)"

    def forward(self, x_dict: dict[str, Any], **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        v1, v2, s = self._dgm_both(x_dict, kwargs)
        try:
            return torch.minimum(*_tensors(v1, v2)), s
        except (RuntimeError, TypeError, ValueError) as e:
            self._dgm_fail(e, v1, v2)


class MaxLoss(LossOperator):
    r"""The element-wise maximum of two losses, :math:`max(a, b)`.

    Examples
    --------
    >>> from pyro_dgm.losses import ValueLoss
    >>> loss = MaxLoss(ValueLoss(3), ValueLoss(1))
    >>> print(loss, float(loss.eval()))
    max \left(3, 1\right) 3.0
    """

    @property
    def _symbol(self) -> Any:
        return _sym("max \\left({}, {}\\right)".format(self.loss1.loss_text, self.loss2.loss_text))

    @property
    def latex(self) -> str:
        return rf"max \left({self.loss1.latex}, {self.loss2.latex}\right)"

    def forward(self, x_dict: dict[str, Any], **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        v1, v2, s = self._dgm_both(x_dict, kwargs)
        try:
            return torch.maximum(*_tensors(v1, v2)), s
        except (RuntimeError, TypeError, ValueError) as e:
            self._dgm_fail(e, v1, v2)


class LossSelfOperator(Loss):
    """Base of the unary operators: one operand (a loss, a number or a tensor)."""

    def __init__(self, loss1: Any) -> None:
        a = _as_loss(loss1, type(self).__name__, None)
        super().__init__(list(a.input_var))
        self.loss1 = a

    @property
    def operands(self) -> tuple[Loss, ...]:
        """The operand (none if it was set to ``None`` or deleted since: evaluating then raises)."""
        x = self._modules.get("loss1")
        return () if x is None else (x,)

    def loss_train(self, x_dict: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """The operand's ``loss_train`` (Pixyz's: ``adversarial_term.mean().loss_train(x)`` trains the
        discriminator); nothing given is Pixyz's ``{}``."""
        return self.loss1.loss_train({} if x_dict is None else x_dict, **kwargs)

    def loss_test(self, x_dict: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """The operand's ``loss_test`` (Pixyz's); nothing given is Pixyz's ``{}``."""
        return self.loss1.loss_test({} if x_dict is None else x_dict, **kwargs)

    def _dgm_one(self, values: dict[str, Any], kwargs: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        a = self.loss1
        if a is None:  # (Pixyz's unary operators fail reading None's eval: AttributeError, which this is too)
            name = type(self).__name__
            raise ArgumentError(f"{name}: its operand loss1 was set to None after it was made; a {name} needs a "
                                "loss to evaluate (only a binary operator counts a None operand as 0, as Pixyz's do)")
        return _operand_value(a, values, kwargs)


class NegLoss(LossSelfOperator):
    """``-a``.

    Examples
    --------
    >>> from pyro_dgm.losses import Parameter
    >>> x = Parameter("x")
    >>> print(-x, "|", -(x + 1))
    - x | - x - 1
    >>> print((-(x + 1)).latex)
    - \\left(x + 1\\right)
    >>> float((-x).eval({"x": 4.}))
    -4.0
    """

    _dgm_prec = PREC_NEG

    @property
    def _symbol(self) -> Any:
        return -self.loss1._symbol

    @property
    def latex(self) -> str:
        return f"- {_wrap(self.loss1, PREC_NEG + 1)}"

    def forward(self, x_dict: dict[str, Any], **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        v, s = self._dgm_one(x_dict, kwargs)
        try:
            return -v, s
        except TypeError as e:
            _raise_operation_error(self, e, (v,), (self.loss1,), "negate")


class AbsLoss(LossSelfOperator):
    r"""``abs(a)``, printed as ``|a|``.

    Examples
    --------
    >>> from pyro_dgm.losses import Parameter
    >>> x = Parameter("x")
    >>> print(abs(x - 5))
    |x - 5|
    >>> float(abs(x - 5).eval({"x": 4.}))
    1.0
    """

    @property
    def _symbol(self) -> Any:
        return _sym("|{}|".format(self.loss1.loss_text))

    @property
    def latex(self) -> str:
        return f"|{self.loss1.latex}|"

    def forward(self, x_dict: dict[str, Any], **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        v, s = self._dgm_one(x_dict, kwargs)
        try:
            return abs(v), s
        except TypeError as e:
            _raise_operation_error(self, e, (v,), (self.loss1,), "take the absolute value of")


class BatchMean(LossSelfOperator):
    r"""The mean over the batch (all dims), :math:`\frac{1}{N}\sum_{i=1}^N \mathcal{L}(x_i)`.

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.distributions import Normal
    >>> loss = Normal(loc=0., scale=1., var=["x"]).log_prob().mean()
    >>> print(loss)
    mean \left(\log p(x) \right)
    >>> loss.eval({"x": torch.zeros(4, 1)}).shape
    torch.Size([])
    """

    @property
    def _symbol(self) -> Any:
        return _sym("mean \\left({} \\right)".format(self.loss1.loss_text))

    @property
    def latex(self) -> str:
        return rf"mean \left({self.loss1.latex} \right)"

    def forward(self, x_dict: dict[str, Any], **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        v, s = self._dgm_one(x_dict, kwargs)
        return _reduce(v, "mean"), s


class BatchSum(LossSelfOperator):
    r"""The sum over the batch (all dims), :math:`\sum_{i=1}^N \mathcal{L}(x_i)`.

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.distributions import Normal
    >>> loss = Normal(loc=0., scale=1., var=["x"]).log_prob().sum()
    >>> print(loss)
    sum \left(\log p(x) \right)
    >>> round(float(loss.eval({"x": torch.zeros(2, 1)})), 4)
    -1.8379
    """

    @property
    def _symbol(self) -> Any:
        return _sym("sum \\left({} \\right)".format(self.loss1.loss_text))

    @property
    def latex(self) -> str:
        return rf"sum \left({self.loss1.latex} \right)"

    def forward(self, x_dict: dict[str, Any], **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        v, s = self._dgm_one(x_dict, kwargs)
        return _reduce(v, "sum"), s


class Detach(LossSelfOperator):
    r"""The value of a loss without its gradient.

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.losses import Parameter
    >>> print(Parameter("x").detach())
    detach \left(x \right)
    >>> Parameter("x").detach().eval({"x": torch.ones(1, requires_grad=True)}).requires_grad
    False
    """

    @property
    def _symbol(self) -> Any:
        return _sym("detach \\left({} \\right)".format(self.loss1.loss_text))

    @property
    def latex(self) -> str:
        return rf"detach \left({self.loss1.latex} \right)"

    def forward(self, x_dict: dict[str, Any], **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        v, s = self._dgm_one(x_dict, kwargs)
        return _reduce(v, "detach"), s

