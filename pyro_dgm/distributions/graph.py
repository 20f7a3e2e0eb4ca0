r"""``dist.graph``: the dependency graph of a distribution, with Pixyz's ``DistGraph`` interface on top.

A :class:`DistGraph` is a networkx ``DiGraph`` with one node per variable and an edge ``c -> v``, labelled with the
factor that generates ``v``, per variable ``c`` that factor is conditioned on (``nx.draw_networkx(p.graph)``). It also
answers what Pixyz programs ask of ``dist.graph``: its ``name`` (the distribution's, renaming included), ``print``,
``visible_graph(dotmode=...)``, ``var``/``cond_var``/``input_var``/``all_var``, ``factors()`` and ``set_option``,
which sets sampling/scoring options of the factors that generate given variables (stored on the distribution, so a
graph rebuilt by a later ``dist.graph`` sees them; with none set, calls cost nothing more).
"""
from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import networkx as nx

from pyro_dgm.distributions.factor import Factor

if TYPE_CHECKING:  # pragma: no cover
    from pyro_dgm.distributions.base import Distribution

__all__ = ["DistGraph", "build_graph", "factors_network_text"]

#: options that change how a factor draws (the rest of an option dict goes to the networks / family as keywords)
PASS_OPTIONS = ("batch_n", "sample_shape", "reparam", "sample_mean")
#: options that change how a factor scores
SCORE_OPTIONS = ("sum_features", "feature_dims")


def factors_network_text(order: Sequence["Distribution"]) -> str:
    """The factors' networks in order, each under its formula (Pixyz's network text of a joint)."""
    return "\n".join(f._network_text() if getattr(f, "_network_text_headed", False)
                     else f"{f.prob_text}:\n{f._network_text()}" for f in order)


class DistGraph(nx.DiGraph):
    """The variables of a distribution and their dependencies, with Pixyz's ``DistGraph`` methods.

    Examples
    --------
    >>> from pyro_dgm.distributions import Normal
    >>> dist = Normal(var=["x"], cond_var=["y"], loc="y", scale=1.) * Normal(var=["y"], loc=0., scale=1.)
    >>> sorted(dist.graph.edges), dist.graph.name
    ([('y', 'x')], 'p')
    >>> dist.graph.set_option(dict(batch_n=4, sample_shape=(2, 3)), ["y"])
    >>> {k: tuple(v.shape) for k, v in dist.sample().items()}
    {'y': (2, 3, 4), 'x': (2, 3, 4)}
    >>> dist.graph.set_option({}, ["y"])
    >>> {k: tuple(v.shape) for k, v in dist.sample().items()}
    {'y': (1,), 'x': (1,)}
    """

    _owner: "Distribution | None" = None

    @property  # type: ignore[override]
    def name(self) -> str:
        """The distribution's name (Pixyz: the first factor's); setting it renames the distribution."""
        return self._owner.name if self._owner is not None else self.graph.get("name", "")

    @name.setter
    def name(self, name: str) -> None:
        if self._owner is not None:
            self._owner.name = name
        else:
            self.graph["name"] = name

    # ------------------------------------------------------------------ Pixyz's queries
    def _order(self) -> tuple["Distribution", ...]:
        return self._owner._order if self._owner is not None else ()

    def factors(self, sorted: bool = False) -> Iterator[Factor]:  # noqa: A002 (Pixyz's keyword)
        """The factors (in the order they run when ``sorted``, else in the order they were multiplied)."""
        owner = self._owner
        if owner is None:
            return iter(())
        opts = owner.__dict__.get("_dg_options") or {}
        out = []
        for f in (owner._order if sorted else owner.factors):
            factor = Factor(f)
            factor.option = dict(opts.get(id(f), {}))
            out.append(factor)
        return iter(out)

    def distribution(self, var_name: str) -> "Distribution":
        """The factor that generates ``var_name``."""
        for f in self._order():
            if var_name in f.var:
                return f
        raise ValueError(f"There is no distribution about {var_name}.")

    @property
    def var(self) -> list[str]:
        return list(self._owner.var) if self._owner is not None else []

    @property
    def cond_var(self) -> list[str]:
        return list(self._owner.cond_var) if self._owner is not None else []

    @property
    def input_var(self) -> list[str]:
        return list(self._owner.input_var) if self._owner is not None else []

    @property
    def all_var(self) -> list[str]:
        return list(self.nodes)

    @property
    def marginalize_list(self) -> set[str]:
        return set(getattr(self._owner, "marginalize_list", ()) or ())

    @property
    def global_option(self) -> dict[str, Any]:
        return dict(self._owner.__dict__.get("_dg_global_option") or {}) if self._owner is not None else {}

    @property
    def has_reparam(self) -> bool:
        return bool(self._owner.has_reparam) if self._owner is not None else False

    @property
    def prob_text(self) -> str:
        return self._owner.prob_text if self._owner is not None else ""

    @property
    def prob_factorized_text(self) -> str:
        return self._owner.prob_factorized_text if self._owner is not None else ""

    @property
    def prob_joint_factorized_and_text(self) -> str:
        return self._owner.prob_joint_factorized_and_text if self._owner is not None else ""

    # ------------------------------------------------------------------ options
    def set_option(self, option_dict: Mapping[str, Any], var: Sequence[str] = ()) -> None:
        """Options used whenever the distribution samples or scores (Pixyz's ``DistGraph.set_option``).

        With ``var``, ``option_dict`` replaces the options of the factors that generate those variables; they
        override the call's own options for those factors (``batch_n``, ``sample_shape``, ``reparam``,
        ``sample_mean`` when sampling, ``sum_features``, ``feature_dims`` when scoring; other keys reach the
        factor as keywords). Without ``var`` it replaces the global options, which (as in Pixyz) pass keywords the
        call does not give. ``{}`` resets.
        """
        owner = self._owner
        if owner is None:
            raise ValueError("set_option: this graph belongs to no distribution")
        if not isinstance(option_dict, Mapping):
            raise TypeError(f"{owner.prob_text}: set_option expects a dict of options, got "
                            f"{type(option_dict).__name__}")
        if isinstance(var, str):
            var = [var]
        if not var:
            owner.__dict__["_dg_global_option"] = dict(option_dict) or None
            return
        opts = dict(owner.__dict__.get("_dg_options") or {})
        for v in var:
            hit = [f for f in owner._order if v in f.var]
            if not hit:
                raise ValueError(f"{owner.prob_text}: set_option: no factor generates {v!r}; the variables are "
                                 f"{owner.var}")
            for f in hit:
                if option_dict:
                    opts[id(f)] = dict(option_dict)
                else:
                    opts.pop(id(f), None)
        owner.__dict__["_dg_options"] = opts or None

    # ------------------------------------------------------------------ drawing and text
    def visible_graph(self, dotmode: bool = False) -> nx.DiGraph:
        """Pixyz's drawable graph: an edge per (conditioning variable, variable) of each factor, nodes named
        ``$x$`` (``dotmode=False``) or ``x`` with the LaTeX label in the ``texlbl`` attribute (``dotmode=True``,
        for dot2tex)."""
        g = nx.DiGraph()
        for f in (self._owner.factors if self._owner is not None else ()):
            for v in f.var:
                for c in f.cond_var:
                    if dotmode:
                        g.add_edge(c, v)
                    else:
                        g.add_edge(f"${c}$", f"${v}$")
        if dotmode:
            for v in list(g):
                g.add_node(v, texlbl=f"${v}$")
        return g

    def __str__(self) -> str:
        owner = self._owner
        if owner is None:
            return super().__str__()
        return (f"Distribution:\n  {owner.prob_joint_factorized_and_text}\nNetwork architecture:\n"
                f"{textwrap.indent(factors_network_text(owner._graph_text_factors()), '  ')}")


def build_graph(factors: Sequence["Distribution"], owner: "Distribution | None" = None) -> DistGraph:
    """The graph of ``factors`` (nodes: variables; edges ``c -> v`` labelled ``factor=<formula>``)."""
    g = DistGraph()
    g._owner = owner
    for f in factors:
        for v in f.var:
            g.add_node(v)
            for c in f.input_var:
                if c != v:
                    g.add_edge(c, v, factor=f.prob_text)
    return g
