r"""``dist.graph``: the dependency graph of a distribution, with Pixyz's ``DistGraph`` interface on top.

A :class:`DistGraph` is a networkx ``DiGraph`` with one node per variable and an edge ``c -> v``, labelled with the
factor that generates ``v``, per variable ``c`` that factor is conditioned on (``nx.draw_networkx(p.graph)``). It also
has Pixyz's ``DistGraph`` interface, answered from the distribution it belongs to:

- queries: ``name``, ``var``/``cond_var``/``input_var``/``all_var``, ``marginalize_list``, ``global_option``,
  ``has_reparam``, the texts, ``print``/``repr``, ``visible_graph(dotmode=...)``, ``factors(sorted=...)`` (Pixyz's
  :class:`~pyro_dgm.distributions.factor.Factor`: the atomic distribution under its own names, the renaming and the
  options) and ``distribution(var)`` (the atomic distribution);
- options: ``set_option`` (or a factor's ``option``) sets sampling/scoring options of the factors that generate given
  variables; they are stored on the distribution, so a graph rebuilt by a later ``dist.graph`` sees them, and with
  none set calls cost nothing more;
- operations, with Pixyz's checks and messages: ``DistGraph(original)`` (a copy), ``appended``, ``united``,
  ``marginalized``, ``var_replaced`` (each returns the graph of the distribution the operation builds);
- computations: ``sample``, ``get_log_prob``, ``forward(mode, kwargs)``, and for one variable ``get_params``,
  ``sample_mean``, ``sample_variance``, ``get_entropy``.

Difference kept: Pixyz's ``sample_mean`` returns the factor's variance; ours returns its mean
(``tests/pixyz_compat/test_diff_distgraph.py``).
"""
from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import networkx as nx
import torch
from torch.nn.modules.module import _addindent

from pyro_dgm.distributions.factor import Factor, factor_head
from pyro_dgm.utils.attributes import users_own
from pyro_dgm.utils.checks import ArgumentError, describe
from pyro_dgm.utils.latex import NAMES_VERSION
from pyro_dgm.utils.latex import prob_text as _prob_text

if TYPE_CHECKING:  # pragma: no cover
    from pyro_dgm.distributions.base import Distribution

__all__ = ["DistGraph", "build_graph", "factors_network_text", "graph_name"]

#: options that change how a factor draws (the rest of an option dict goes to the networks / family as keywords)
PASS_OPTIONS = ("batch_n", "sample_shape", "reparam", "sample_mean")
#: options that change how a factor scores
SCORE_OPTIONS = ("sum_features", "feature_dims")


class UnknownVariableError(KeyError, ValueError):
    """A variable the graph does not hold: a ``KeyError`` (Pixyz's graph lookup raises one), whose ``args[0]`` is
    the variable's name as in Pixyz's, and a ``ValueError``; it prints as a sentence."""

    def __init__(self, var_name: Any, message: str = "") -> None:
        super().__init__(var_name)
        self.message = message or f"There is no distribution about {var_name}."

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> Any:
        return type(self), (self.args[0] if self.args else None, self.message)


def graph_name(d: "Distribution") -> str:
    """The name of ``d``'s graph, which a product or renaming of ``d`` prints on its formula's left side (Pixyz's
    ``DistGraph.name``): a product's, renaming's or marginal's formula name; a single distribution's own name, unless
    its ``graph.name`` was set since (Pixyz's setter of a single distribution's ``name`` sets both); a subclass's
    own ``name`` property gives it, as Pixyz names a graph after its first factor's ``name``."""
    own = d.__dict__.get("_dgm_graph_name")
    if own is not None:
        return own
    return d.name if users_own(type(d), "name") else d._name


def factors_network_text(order: Sequence["Distribution"]) -> str:
    """The factors' networks in order, each under its formula (Pixyz's network text of a joint)."""
    return "\n".join(f._dgm_network_text() if getattr(f, "network_text_headed", False)
                     else f"{factor_head(f._dgm_factor_text, f)}:\n{f._dgm_network_text()}" for f in order)


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
    >>> renamed = dist.graph.var_replaced({"y": "w"})
    >>> renamed.var, [f.prob_text for f in renamed.factors(sorted=True)], renamed.distribution("w").var
    (['x', 'w'], ['p(w)', 'p(x|w)'], ['y'])
    """

    _owner: "Distribution | None" = None

    def __init__(self, original: Any = None, **attr: Any) -> None:
        """A copy of ``original`` (a DistGraph: same distribution, nodes and edges), or an empty graph."""
        super().__init__(original, **attr)
        if isinstance(original, DistGraph):
            self._owner = original._owner

    @property  # type: ignore[override]
    def name(self) -> str:
        """The name in the formulas of the distribution (Pixyz: a product's is its first factor's) and of products
        and renamings built from it later; setting it renames a product's, renaming's or marginal's formulas (their
        own ``name`` is a label that formulas do not use, as in Pixyz). As in Pixyz, setting a single distribution's
        leaves its own formula (``name``) as it is: products and renamings built afterwards use it."""
        return graph_name(self._owner) if self._owner is not None else self.graph.get("name", "")

    @name.setter
    def name(self, name: str) -> None:
        owner = self._owner
        if owner is None:
            self.graph["name"] = name
        elif owner._atomic:
            if not isinstance(name, str):
                raise ArgumentError(f"{describe(owner)}: graph.name must be a string, got {name!r}")
            owner.__dict__["_dgm_graph_name"] = name
            NAMES_VERSION[0] += 1  # (its own prob_factorized_text, a family's, reads it: Pixyz's graph's)
        else:
            owner._dgm_rename_text(name)

    # ------------------------------------------------------------------ Pixyz's queries
    def _dgm_order(self) -> tuple["Distribution", ...]:
        return self._owner._dgm_sampling_order if self._owner is not None else ()

    def _pixyz_graph(self) -> nx.DiGraph:
        """The graph Pixyz's DistGraph holds for the owner (factor nodes and variable nodes, Pixyz's order)."""
        from pyro_dgm.distributions.joint import pixyz_graph
        from pyro_dgm.distributions.ops import MarginalizeVarDistribution

        owner = self._owner
        while isinstance(owner, MarginalizeVarDistribution):
            owner = owner.p
        return pixyz_graph(owner) if owner is not None else nx.DiGraph()

    def _factor(self, f: "Distribution", opts: Mapping[int, Any]) -> Factor:
        """Pixyz's Factor of our factor ``f``: the atomic distribution under its own names, the renaming (global ->
        local) and the options; setting ``factor.option`` sets them for the owner (as Pixyz's persistent nodes)."""
        from pyro_dgm.distributions.ops import ReplaceVarDistribution

        renamed = isinstance(f, ReplaceVarDistribution)
        factor = Factor(f._dgm_original if renamed else f, None, (self._owner, id(f)))
        if renamed:
            factor.name_dict = {new: old for old, new in f._dgm_renamed_from.items()}
        return factor

    def factors(self, sorted: bool = False) -> Iterator[Factor]:  # noqa: A002 (Pixyz's keyword)
        """Pixyz's factors (:class:`Factor`: an atomic distribution, its renaming and options), in topological
        order when ``sorted`` (the order they run), else in the graph's order (the order they were multiplied)."""
        owner = self._owner
        if owner is None:
            return iter(())
        opts = owner.factor_options
        pg = self._pixyz_graph()
        nodes = nx.topological_sort(pg) if sorted else pg
        return iter([self._factor(n, opts) for n in nodes if not isinstance(n, str)])

    def distribution(self, var_name: str) -> "Distribution":
        """The atomic distribution that generates ``var_name`` (under its own names, as Pixyz's factor holds it)."""
        for f in self.factors():
            if var_name in f.var:
                return f.dist
        owner = self._owner
        where = (f" ({owner.prob_text}: its variables are {list(owner.var)}, its inputs {list(owner.cond_var)})"
                 if owner is not None else "")
        if not any(var_name in f.cond_var for f in self.factors()):  # (not in the graph: Pixyz's graph lookup
            raise UnknownVariableError(var_name, f"There is no distribution about {var_name}{where}.")  # raises
        raise ValueError(f"There is no distribution about {var_name}{where}.")  # (a KeyError there)

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
        """Every variable, marginalized ones included, in Pixyz's graph order."""
        if self._owner is None:
            return [n for n in self.nodes if isinstance(n, str)]
        return [n for n in self._pixyz_graph() if isinstance(n, str)]

    @property
    def marginalize_list(self) -> set[str]:
        return set(getattr(self._owner, "marginalize_list", ()) or ())

    @property
    def global_option(self) -> dict[str, Any]:
        """The options every call uses for the keywords it does not give (see :meth:`set_option`): the dict
        itself, as in Pixyz (``graph.global_option["return_hidden"] = True`` sets one)."""
        if self._owner is None:
            return self.graph.setdefault("global_option", {})
        return self._owner._dgm_live_global_option()

    @global_option.setter
    def global_option(self, option_dict: Mapping[str, Any]) -> None:
        self.set_option(option_dict)

    @property
    def has_reparam(self) -> bool:
        """Whether every factor's distribution reparameterizes (Pixyz's)."""
        return all(f.dist.has_reparam for f in self.factors())

    @property
    def prob_text(self) -> str:
        """Pixyz's: the graph's :attr:`name` over its variables (``graph.name = "q"`` gives ``q(z)``)."""
        return _prob_text(self.name, self.var, self.cond_var)

    @property
    def prob_factorized_text(self) -> str:
        """Pixyz's: the factors' formulas, last drawn first (an atomic distribution's is its formula's left side,
        e.g. ``p(x)`` for a mixture), under the integrals of a marginal."""
        owner = self._owner
        if owner is None:
            return ""
        if self.marginalize_list:
            return owner.prob_factorized_text
        return "".join(reversed([f.prob_text for f in self.factors(sorted=True)]))

    @property
    def prob_joint_factorized_and_text(self) -> str:
        text, factorized = self.prob_text, self.prob_factorized_text
        return text if factorized == text else f"{text} = {factorized}"

    # ------------------------------------------------------------------ options
    def set_option(self, option_dict: Mapping[str, Any], var: Sequence[str] = ()) -> None:
        """Options used whenever the distribution samples or scores (Pixyz's ``DistGraph.set_option``).

        With ``var``, ``option_dict`` replaces the options of the factors that generate those variables; they
        override the call's own options for those factors (``batch_n``, ``sample_shape``, ``reparam``,
        ``sample_mean`` when sampling, ``sum_features``, ``feature_dims`` when scoring; other keys reach the
        factor as keywords). Without ``var`` it replaces the global options, which (as in Pixyz) pass keywords the
        call does not give. ``{}`` resets. As in Pixyz, the graph keeps ``option_dict`` itself (a change to it
        later changes the calls), an input variable of the graph has no factor to set (nothing happens), and a
        string ``var`` that names no variable is read letter by letter (``"zx"``: ``z`` and ``x``).
        """
        owner = self._owner
        if owner is None:
            raise ValueError("set_option: this graph belongs to no distribution")
        if not isinstance(option_dict, Mapping):
            raise TypeError(f"{owner.prob_text}: set_option expects a dict of options, got "
                            f"{type(option_dict).__name__}")
        if not var:
            owner._dgm_live_global_option(option_dict)  # type: ignore[arg-type]
            return
        inner = getattr(owner, "_dgm_option_factors", owner._dgm_sampling_order)
        if isinstance(var, str):  # (Pixyz iterates the string: its letters where each is a variable, else the name
            names = self.all_var  # itself where it is one, which Pixyz refuses)
            var = list(var) if all(c in names for c in var) or not any(var in f.var for f in inner) else [var]
        for v in var:
            hit = [f for f in inner if v in f.var]
            if not hit and v not in self.all_var:
                raise UnknownVariableError(v, f"{owner.prob_text}: set_option: no factor generates {v!r}; the "
                                              f"variables are {owner.var}")  # (Pixyz's lookup: a KeyError)
            for f in hit:  # (none for an input variable: Pixyz's graph has no factor before it either)
                owner._dgm_live_option(id(f), option_dict)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ Pixyz's graph operations
    def appended(self, atom_dist: "Distribution") -> "DistGraph":
        """The graph with the factor ``atom_dist`` added (Pixyz: a new variable may not be a node already)."""
        if self._owner is None:
            return atom_dist.graph
        for v in atom_dist.var:
            if v in self.all_var:
                raise ValueError(f"A new variable name '{v}' is already used in this graph.")
        return (self._owner * atom_dist).graph

    def united(self, other: "DistGraph") -> "DistGraph":
        """The graph of the product of both graphs' distributions (Pixyz's ``united``, with its checks)."""
        if self._owner is None or other._owner is None:
            return DistGraph(other if self._owner is None else self)
        mine = set(self.var) | self.marginalize_list
        if not mine.isdisjoint(set(other.var) | other.marginalize_list):
            raise ValueError("There is var-name conflicts between two graphs.")
        # (Pixyz's check for a distribution used in both graphs compares its fresh Factor copies: it never fires, and
        # a distribution times its renamed self is a valid product there and here)
        return (self._owner * other._owner).graph

    def marginalized(self, marginalize_list: Sequence[str]) -> "DistGraph":
        """The graph of the distribution with ``marginalize_list`` integrated out (Pixyz's checks and messages)."""
        names = set(marginalize_list)
        if not names:
            raise ValueError("Length of `marginalize_list` must be at least 1, got 0.")
        if not names < set(self.var):
            raise ValueError("marginalize_list has unknown variables or it has all of variables of `p`.")
        return self._require_owner("marginalized").marginalize_var(list(marginalize_list)).graph

    def var_replaced(self, replace_dict: Mapping[str, str]) -> "DistGraph":
        """The graph with variables renamed (old -> new), Pixyz's checks and messages included."""
        all_var = self.all_var
        unknown = [v for v in replace_dict if v not in all_var]
        if unknown:
            raise ValueError(f"replace_dict has unknown variables: {unknown}")
        renamed = [replace_dict.get(v, v) for v in all_var]
        if len(set(renamed)) != len(all_var):
            dup = [v for v in all_var if renamed.count(replace_dict.get(v, v)) > 1]
            raise ValueError(f"{dup} are conflicted after replaced.")
        return self._require_owner("var_replaced").replace_var(**replace_dict).graph

    def _require_owner(self, what: str) -> "Distribution":
        if self._owner is None:
            raise ValueError(f"DistGraph.{what}: this graph has no distribution (build graphs with appended)")
        return self._owner

    # ------------------------------------------------------------------ Pixyz's computations (the distribution's)
    def __call__(self, mode: str, kwargs: Mapping[str, Any]) -> Any:
        """``graph(mode, kwargs)``: :meth:`forward` (Pixyz's graph is an ``nn.Module``, called so)."""
        return self.forward(mode, kwargs)

    def forward(self, mode: str, kwargs: Mapping[str, Any]) -> Any:
        """Pixyz's ``DistGraph.forward``: ``mode`` is ``"sample"`` or ``"get_log_prob"``."""
        if mode == "sample":
            return self.sample(**kwargs)
        if mode == "get_log_prob":
            return self.get_log_prob(**kwargs)
        raise ValueError(f"DistGraph.forward: mode must be 'sample' or 'get_log_prob', got {mode!r}")

    def sample(self, x_dict: Any = {}, batch_n: int | None = None,  # noqa: B006 (Pixyz's signature)
               sample_shape: Any = torch.Size(), return_all: bool = True, reparam: bool = False,
               sample_mean: bool = False, **kwargs: Any) -> dict[str, Any]:
        """The distribution's :meth:`~pyro_dgm.distributions.base.Distribution.sample`."""
        if self._owner is None:
            return dict(x_dict) if return_all else {}
        return self._owner.sample(x_dict, batch_n=batch_n, sample_shape=sample_shape, return_all=return_all,
                                  reparam=reparam, sample_mean=sample_mean, **kwargs)

    def get_log_prob(self, x_dict: Mapping[str, Any], sum_features: bool = True,
                     feature_dims: Sequence[int] | None = None, **kwargs: Any) -> Any:
        """The distribution's log-density (as Pixyz's graph, extra keywords are not passed on)."""
        if self._owner is None:
            return 0
        return self._owner.get_log_prob(x_dict, sum_features=sum_features, feature_dims=feature_dims)

    def _single_factor(self, what: str) -> Factor:
        if len(self.var) != 1:
            raise NotImplementedError(f"{self.prob_text}: DistGraph.{what} is defined for a graph of one variable, "
                                      f"got {self.var}")
        return list(self.factors())[-1]  # Pixyz's: the last factor's

    def get_params(self, params_dict: Mapping[str, Any] = {}, **kwargs: Any) -> Any:  # noqa: B006
        """The parameters of the (one-variable) graph's factor given ``params_dict``."""
        return self._single_factor("get_params").get_params(params_dict, **kwargs)

    def sample_mean(self, x_dict: Mapping[str, Any] = {}) -> Any:  # noqa: B006
        """The mean of the (one-variable) graph's factor (Pixyz's returns the variance: see the module doc)."""
        return self._single_factor("sample_mean").sample_mean(x_dict)

    def sample_variance(self, x_dict: Mapping[str, Any] = {}) -> Any:  # noqa: B006
        """The variance of the (one-variable) graph's factor."""
        return self._single_factor("sample_variance").sample_variance(x_dict)

    def get_entropy(self, x_dict: Mapping[str, Any] = {}, sum_features: bool = True,  # noqa: B006
                    feature_dims: Sequence[int] | None = None) -> Any:
        """The entropy of the (one-variable) graph's factor."""
        return self._single_factor("get_entropy").get_entropy(x_dict, sum_features, feature_dims)

    # ------------------------------------------------------------------ drawing and text
    def visible_graph(self, dotmode: bool = False) -> nx.DiGraph:
        """Pixyz's drawable graph: an edge per (conditioning variable, variable) of each factor, nodes named
        ``$x$`` (``dotmode=False``) or ``x`` with the LaTeX label in the ``texlbl`` attribute (``dotmode=True``,
        for dot2tex)."""
        g = nx.DiGraph()
        # Pixyz's order: its factors in the order they were added (a marginal's integrated ones too), each one's
        # variables in its atomic distribution's order under the new names
        for f in self.factors():
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

    def __repr__(self) -> str:
        """Pixyz's (an nn.Module's): the atomic distributions in the order they were multiplied."""
        dists = [f.dist for f in self.factors()]
        if not dists:
            return "DistGraph()"
        lines = [f"({i}): {_addindent(repr(d), 2)}" for i, d in enumerate(dists)]
        return "DistGraph(\n  " + "\n  ".join(lines) + "\n)"

    def __str__(self) -> str:
        owner = self._owner
        if owner is None:
            return super().__str__()
        text = "\n".join(str(f) for f in self.factors(sorted=True))  # Pixyz's: each factor under its formula
        return (f"Distribution:\n  {self.prob_joint_factorized_and_text}\nNetwork architecture:\n"
                f"{textwrap.indent(text, '  ')}")


def build_graph(factors: Sequence["Distribution"], owner: "Distribution | None" = None) -> DistGraph:
    """The graph of ``factors`` (nodes: variables; edges ``c -> v`` labelled ``factor=<formula>``)."""
    g = DistGraph()
    g._owner = owner
    for f in factors:
        own = f.var
        for v in own:
            g.add_node(v)
            for c in f.input_var:
                if c not in own:  # (a density over its own inputs, CustomProb(var=["x", "y"]): no edge x -> y)
                    g.add_edge(c, v, factor=f.prob_text)
    return g
