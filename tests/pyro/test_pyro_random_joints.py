"""Random joints as Pyro models, against plain-Pyro twins built from the same networks.

Hypothesis draws a joint of up to four factors (five families, constant or network parameters, random parents and
names, multiplied in a random order) and which of its variables the data gives. ``joint.model(**data)`` must have one
``pyro.sample`` site per variable, observed exactly where the data gives it, in an ancestral order, inside the data
plate; and, with its latent draws fixed by ``poutine.condition``, the plain-Pyro model written from the same spec
(``pyro.sample(v, dist.Family(params).to_event(1), obs=...)`` in a ``pyro.plate``) must give the same
``log_prob_sum``, which must also equal ``joint.get_log_prob`` of the same values.
"""
from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyro import poutine
from torch import nn

import pyro_dgm.distributions as D

NETWORK = ["Normal", "Bernoulli", "Laplace", "Categorical"]
CONSTANT = ["Normal", "Bernoulli", "Laplace", "Categorical", "Gamma", "Dirichlet"]
PLAIN = {"Normal": dist.Normal, "Laplace": dist.Laplace, "Bernoulli": dist.Bernoulli,
         "Categorical": dist.OneHotCategorical, "Gamma": dist.Gamma, "Dirichlet": dist.Dirichlet}
EVENT = {"Categorical", "Dirichlet"}  # families whose Pyro distribution has the feature dim as its event already


@st.composite
def specs(draw: Any) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(list("xyzwab")), min_size=1, max_size=4, unique=True))
    factors: list[dict[str, Any]] = []
    for v in names:
        earlier = [f["var"] for f in factors]
        parents = draw(st.lists(st.sampled_from(earlier), unique=True, max_size=len(earlier))) if earlier else []
        family = draw(st.sampled_from(NETWORK if parents else CONSTANT))
        factors.append({"var": v, "family": family, "parents": parents,
                        "dim": draw(st.integers(2, 3) if family in EVENT else st.integers(1, 3))})
    return {"factors": factors, "order": draw(st.permutations(range(len(names)))),
            "observed": draw(st.lists(st.sampled_from(names), unique=True))}


def constant_params(family: str, d: int) -> dict[str, torch.Tensor]:
    return {"Normal": dict(loc=torch.zeros(d), scale=torch.full((d,), 1.5)),
            "Laplace": dict(loc=torch.zeros(d), scale=torch.ones(d)),
            "Bernoulli": dict(probs=torch.full((d,), 0.3)),
            "Categorical": dict(probs=torch.softmax(torch.arange(d).float(), 0)),
            "Gamma": dict(concentration=torch.full((d,), 2.), rate=torch.ones(d)),
            "Dirichlet": dict(concentration=torch.full((d,), 2.))}[family]


def build(spec: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The pyro_dgm joint and, per variable, a function of the values so far giving its plain-Pyro distribution."""
    dims = {f["var"]: f["dim"] for f in spec["factors"]}
    dists, plain = [], {}
    for f in spec["factors"]:
        v, family, parents, d = f["var"], f["family"], f["parents"], f["dim"]
        if not parents:
            params = constant_params(family, d)
            dists.append(getattr(D, family)(var=[v], **params))
            plain[v] = lambda values, family=family, params=params: PLAIN[family](**params)
            continue
        fc = nn.Linear(sum(dims[p] for p in parents), 2 * d)

        def params_of(values: dict[str, Any], fc: nn.Module = fc, parents: list[str] = parents, d: int = d,
                      family: str = family) -> dict[str, torch.Tensor]:
            o = fc(torch.cat([values[p].float() for p in parents], -1))
            if family in ("Normal", "Laplace"):
                return {"loc": o[..., :d], "scale": nn.functional.softplus(o[..., d:]) + 0.1}
            return {"probs": torch.sigmoid(o[..., :d]) if family == "Bernoulli" else torch.softmax(o[..., :d], -1)}

        class Net(getattr(D, family)):
            def __init__(self, v: str = v, parents: list[str] = parents, fc: nn.Module = fc,
                         params_of: Any = params_of) -> None:
                super().__init__(var=[v], cond_var=list(parents))
                self.fc, self.params_of = fc, params_of

            def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
                return self.params_of(inputs)

        dists.append(Net())
        plain[v] = lambda values, family=family, params_of=params_of: PLAIN[family](**params_of(values))
    joint = dists[spec["order"][0]]
    for i in spec["order"][1:]:
        joint = joint * dists[i]
    return joint, plain


def plain_model(spec: dict[str, Any], plain: dict[str, Any], data: dict[str, torch.Tensor], n: int) -> None:
    with pyro.plate("data", n, dim=-1):
        values = dict(data)
        for f in spec["factors"]:  # the spec lists each factor after its parents: an ancestral order
            v = f["var"]
            fn = plain[v](values)
            if f["family"] not in EVENT:
                fn = fn.to_event(1)
            values[v] = pyro.sample(v, fn.expand([n]), obs=data.get(v))


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs())
def test_a_random_joint_is_the_pyro_model_written_by_hand(spec: dict[str, Any]) -> None:
    pyro.clear_param_store()
    torch.manual_seed(0)
    joint, plain = build(spec)
    n = 3
    drawn = joint.sample(batch_n=n)
    data = {v: drawn[v].detach() for v in spec["observed"]}
    tr = poutine.trace(joint.model).get_trace(**data)
    sites = [name for name, s in tr.nodes.items() if s["type"] == "sample" and name in joint.var]
    assert sorted(sites) == sorted(joint.var)
    for v in sites:
        assert tr.nodes[v]["is_observed"] == (v in data), v
        assert tr.nodes[v]["fn"].batch_shape == ((n,) if data else (1,)), v  # no data: the model draws one point
    position = {v: i for i, v in enumerate(sites)}
    for f in spec["factors"]:
        assert all(position[p] < position[f["var"]] for p in f["parents"]), "a site before its parent"
    latents = {v: tr.nodes[v]["value"] for v in sites if v not in data}
    twin = poutine.trace(poutine.condition(lambda: plain_model(spec, plain, data, n if data else 1),
                                           data=latents)).get_trace()
    torch.testing.assert_close(tr.log_prob_sum(), twin.log_prob_sum())
    torch.testing.assert_close(tr.log_prob_sum(), joint.get_log_prob({**data, **latents}).sum())
