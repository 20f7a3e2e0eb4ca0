"""The :class:`Loss` base class: a formula over distributions, evaluated lazily with :meth:`Loss.eval`."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from torch import Tensor

from pyro_dgm.utils.checks import check_present
from pyro_dgm.utils.latex import print_latex as _print_latex

__all__ = ["Loss"]


class Loss:
    """A loss term: its input variables, its LaTeX text, and :meth:`eval`.

    Subclasses implement :meth:`forward` (the value given a dict of values) and :attr:`latex`.
    """

    def __init__(self, input_var: Sequence[str] = ()) -> None:
        self._input_var = list(input_var)

    @property
    def input_var(self) -> list[str]:
        """The variables :meth:`eval` needs."""
        return self._input_var

    @property
    def latex(self) -> str:
        raise NotImplementedError

    @property
    def loss_text(self) -> str:
        """The formula as LaTeX text."""
        return self.latex

    def __str__(self) -> str:
        return self.loss_text

    def __repr__(self) -> str:
        return self.loss_text

    def _latex_text(self) -> str:
        return self.loss_text

    def _repr_latex_(self) -> str:
        return f"$${self.loss_text}$$"

    def print_latex(self) -> Any:
        """Show the formula as LaTeX (rendered in a notebook)."""
        return _print_latex(self)

    def forward(self, values: Mapping[str, Any], **kwargs: Any) -> Tensor:
        raise NotImplementedError

    def eval(self, x_dict: Mapping[str, Any] | None = None, return_dict: bool = False, **kwargs: Any) -> Any:
        """The value of the loss given the values of :attr:`input_var` (``eval`` as in Pixyz, not ``nn.Module``)."""
        values = dict(x_dict) if x_dict is not None else {}
        check_present(self, values, self._input_var)
        out = self.forward(values, **kwargs)
        return (out, values) if return_dict else out
