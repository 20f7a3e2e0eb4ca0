"""Printing formulas: the text of ``p(x|z)`` and a notebook-friendly ``print_latex``."""
from __future__ import annotations

import functools
from typing import Any, Sequence

#: Bumped whenever a distribution is renamed (or a loss's operand replaced), so that text and terms cached from
#: formulas know they are out of date.
NAMES_VERSION = [0]


@functools.lru_cache(maxsize=4096)
def latex_name(name: str) -> str:
    r"""A name as Pixyz prints it in formulas: SymPy's LaTeX of a symbol of that name (idempotent).

    Examples
    --------
    >>> print(*[latex_name(n) for n in ("p1", "x_1", "p_prior", "p_{prior}", "mu", "q")])
    p_{1} x_{1} p_{prior} p_{prior} \mu q
    """
    import sympy

    try:
        return sympy.latex(sympy.Symbol(name))
    except Exception:  # a name SymPy cannot typeset stays as it is
        return name


def prob_text(name: str, var: Sequence[str], cond_var: Sequence[str] = ()) -> str:
    """Pixyz's text of a distribution (variable names typeset as :func:`latex_name` does).

    Examples
    --------
    >>> prob_text("p", ["x", "z"], ["y"])
    'p(x,z|y)'
    >>> prob_text("p_{prior}", ["z"])
    'p_{prior}(z)'
    >>> prob_text("q", ["z1"], ["x_a"])
    'q(z_{1}|x_{a})'
    """
    text = f"{name}({','.join(latex_name(v) for v in var)}"
    if cond_var:
        text += f"|{','.join(latex_name(v) for v in cond_var)}"
    return text + ")"


# A function of strings only: torch.compile calls it while tracing and keeps its text as a constant (what
# ``torch.compiler.assume_constant_result`` marks, without importing the compiler here), so that the names of a
# model's Pyro sites traced by Dynamo never step into SymPy (torch 2.11's Dynamo failed there).
prob_text._dynamo_marked_constant = True  # type: ignore[attr-defined]


def math_escape(text: str) -> str:
    r"""``text`` made safe inside a math block: a ``$`` not already escaped becomes ``\$`` (a bare ``$`` ends the
    block, so ``$$`` in a name would end a notebook's formula). Text without ``$`` comes back unchanged.

    Examples
    --------
    >>> print(math_escape("p_{a$$b}(x)"), math_escape(r"p_{\$}(x)"), math_escape("p(x|z)"))
    p_{a\$\$b}(x) p_{\$}(x) p(x|z)
    """
    if "$" not in text:
        return text
    out = []
    for i, ch in enumerate(text):
        if ch == "$" and (i == 0 or text[i - 1] != "\\"):
            out.append("\\$")
        else:
            out.append(ch)
    return "".join(out)


def print_latex(obj: Any) -> Any:
    """Show ``obj``'s formula: as rendered math in IPython/Jupyter, as plain LaTeX text elsewhere.

    ``obj`` is a distribution, its ``graph``, a loss or a model (anything with ``_dgm_latex_text()``). Returns the
    IPython ``Math`` object when IPython is installed (so a notebook cell displays it), else prints the text and
    returns it.
    """
    latex_text = getattr(obj, "_dgm_latex_text", None)
    if latex_text is not None:
        text = latex_text()
    elif isinstance(getattr(obj, "prob_joint_factorized_and_text", None), str):  # a DistGraph, as Pixyz's branch
        text = obj.prob_joint_factorized_and_text
    else:
        raise TypeError(f"print_latex: expected a distribution, its graph, a loss or a model, got "
                        f"{type(obj).__name__}")
    text = math_escape(text)
    try:
        from IPython.display import Math
    except ImportError:
        print(text)
        return text
    return Math(text)


def convert_latex_name(name: str) -> str:
    r"""The LaTeX of a variable or distribution name, as sympy writes a symbol (Pixyz's helper).

    Examples
    --------
    >>> convert_latex_name("z_prev"), convert_latex_name("alpha"), convert_latex_name("x")
    ('z_{prev}', '\\alpha', 'x')
    """
    import sympy

    return sympy.latex(sympy.Symbol(name))
