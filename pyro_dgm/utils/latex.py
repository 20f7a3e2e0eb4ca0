"""Printing formulas: the text of ``p(x|z)`` and a notebook-friendly ``print_latex``."""
from __future__ import annotations

from typing import Any, Sequence

#: Bumped whenever a distribution is renamed, so that text cached from formulas knows it is out of date.
NAMES_VERSION = [0]


def prob_text(name: str, var: Sequence[str], cond_var: Sequence[str] = ()) -> str:
    """Pixyz's text of a distribution.

    Examples
    --------
    >>> prob_text("p", ["x", "z"], ["y"])
    'p(x,z|y)'
    >>> prob_text("p_{prior}", ["z"])
    'p_{prior}(z)'
    """
    text = f"{name}({','.join(var)}"
    if cond_var:
        text += f"|{','.join(cond_var)}"
    return text + ")"


def print_latex(obj: Any) -> Any:
    """Show ``obj``'s formula: as rendered math in IPython/Jupyter, as plain LaTeX text elsewhere.

    ``obj`` is a distribution or a loss (anything with ``_latex_text()``). Returns the IPython ``Math`` object
    when IPython is installed (so a notebook cell displays it), else prints the text and returns it.
    """
    text = obj._latex_text()
    try:
        from IPython.display import Math
    except ImportError:
        print(text)
        return text
    return Math(text)
