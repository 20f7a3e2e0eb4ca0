"""The LaTeX of a power whose base is a power (probe p369): parenthesized, as sympy prints the same formula."""
from __future__ import annotations

import sympy

from pyro_dgm.losses import Parameter


def test_a_power_of_a_power_prints_its_base_in_parentheses() -> None:
    """``(a ** b) ** c`` printed ``a^{b}^{c}`` (a double superscript, no formula; read as ``a^{b^{c}}`` it is 512
    where the value is 64). It prints ``\\left(a^{b}\\right)^{c}`` now, sympy's text for the same expression, and
    ``a ** (b ** c)`` keeps sympy's ``a^{b^{c}}``."""
    a, b, c = Parameter("a"), Parameter("b"), Parameter("c")
    sa, sb, sc = sympy.symbols("a b c")
    assert ((a ** b) ** c).latex == sympy.latex((sa ** sb) ** sc, order="none") == r"\left(a^{b}\right)^{c}"
    assert (a ** (b ** c)).latex == sympy.latex(sa ** (sb ** sc)) == "a^{b^{c}}"
    assert float(((a ** b) ** c).eval({"a": 2., "b": 2., "c": 3.})) == 64.0
