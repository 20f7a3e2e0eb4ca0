"""Eighteenth round: a ``forward`` set on an instance of a built-in family (``p.forward = ...``), under Pixyz 0.3.3 and
here (:mod:`pixyz_harness`).

Pixyz calls ``self(**inputs)``, which finds a ``forward`` set on the instance before the class's: a ``Normal`` built
with constants and a ``cond_var`` that no parameter names, then given ``p.forward = lambda z: {"loc": ...}``, is a
conditional distribution whose ``loc`` comes from that function. Here the arguments were bound to the class's
``forward`` (the family's, which is no network) when the distribution was built, so it raised ``ValueError: cond_var
'z' is used by no parameter`` at its first call, whatever was set on it before or after (a lambda, a
``functools.partial``, another object's method, a ``forward(**inputs)``); ``del p.forward`` goes back to the class's.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch

from pixyz_harness import assert_same, run_both, run_pyro_dgm


def _set_forward(p: Any, kind: str, w: torch.Tensor) -> None:
    """Set ``p.forward`` (mapping ``z`` to ``loc = z @ w``) in one of the ways a notebook does."""
    from torch import nn

    def loc_of(w: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": z @ w}

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(w.clone())

        def params(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loc": z @ self.w}

    if kind == "lambda":
        p.forward = lambda z: {"loc": z @ w}
    elif kind == "partial":
        p.forward = functools.partial(loc_of, w)
    elif kind == "method":  # of another object (its network registered on p too, as Pixyz users do)
        p.net = Net()
        p.forward = p.net.params
    elif kind == "var_keyword":  # Pixyz passes the inputs by name
        p.forward = lambda **inputs: {"loc": inputs["z"] @ w}
    else:  # a keyword with a default that no input fills
        p.forward = lambda z, shift=0.0: {"loc": z @ w + shift}


def _instance_forward_program(kind: str, scale: str) -> Callable[[], Any]:
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal
        from pixyz.losses import LogProb

        w = torch.randn(2, 3)
        if scale == "constant":  # the probe's case: constants and a cond_var that no parameter names
            p = Normal(var=["x"], cond_var=["z"], scale=torch.tensor(0.5), name="p")
            inputs = {"z": torch.randn(4, 2)}
        else:  # a parameter named by a cond_var: forward gets the other inputs only
            p = Normal(var=["x"], cond_var=["z", "s"], scale="s", name="p")
            inputs = {"z": torch.randn(4, 2), "s": torch.rand(4, 3) + 0.5}
        _set_forward(p, kind, w)
        x = torch.randn(4, 3)
        return {"log_prob": p.get_log_prob({**inputs, "x": x}),
                "loss": LogProb(p).eval({**inputs, "x": x}),
                "sample": p.sample(dict(inputs))["x"],
                "params": p.get_params(dict(inputs)),
                "variance": p.sample_variance(dict(inputs)),
                "entropy": p.get_entropy(dict(inputs)),
                "mean": p.sample_mean(dict(inputs)), "loc": inputs["z"] @ w}
    return program


@pytest.mark.parametrize("scale", ["constant", "named"])
@pytest.mark.parametrize("kind", ["lambda", "partial", "method", "var_keyword", "keyword_default"])
def test_a_forward_set_on_a_family_without_a_network_is_called_as_under_pixyz(kind: str, scale: str) -> None:
    ref, ours = run_both(_instance_forward_program(kind, scale))
    # (Pixyz's sample_mean of a distribution is its DistGraph's, which returns the variance: see porting.md)
    torch.testing.assert_close(ours.pop("mean"), ours.pop("loc"))
    del ref["mean"], ref["loc"]
    assert_same(ref, ours)


def prog_forward_set_after_calls_then_deleted() -> Any:
    import functools

    import torch
    from torch import nn

    from pixyz.distributions import Normal

    def fresh(*names: str) -> dict[str, torch.Tensor]:  # new tensors at each call (Pixyz's cache answers the same
        return {n: torch.randn(4, 2 if n in "za" else 3) for n in names}  # ones with the old forward's parameters)

    def error(f: Any) -> str:
        try:
            f()
        except (ValueError, TypeError) as e:
            return type(e).__name__
        return "no error"

    w = torch.randn(2, 3)
    p = Normal(var=["x"], cond_var=["z"], scale=torch.tensor(0.5), name="p")
    out: dict[str, Any] = {"no_forward": error(lambda: p.get_log_prob(fresh("z", "x")))}
    p.forward = lambda z: {"loc": z @ w}
    out["first"] = p.get_log_prob(fresh("z", "x")), p.sample(fresh("z"))["x"]
    p.forward = functools.partial(lambda w, z: {"loc": z @ w - 1.0}, w)  # a later cell sets another
    out["second"] = p.get_log_prob(fresh("z", "x")), p.sample(fresh("z"))["x"]
    del p.forward  # the class's again: no network
    out["deleted"] = error(lambda: p.get_log_prob(fresh("z", "x")))

    class Q(Normal):  # a class with a network: del goes back to it
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["a"], name="q")
            self.fc = nn.Linear(2, 3)

        def forward(self, a: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loc": self.fc(a), "scale": torch.ones(1)}

    q = Q()
    q.forward = lambda a: {"loc": q.fc(a) * 2.0, "scale": torch.ones(1)}
    out["instance"] = q.get_log_prob(fresh("a", "x"))
    del q.forward
    out["class"] = q.get_log_prob(fresh("a", "x"))
    return out


def prog_forward_set_in_init_of_a_subclass_without_one() -> Any:
    import torch
    from torch import nn

    from pixyz.distributions import Bernoulli

    class P(Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(2, 3)
            self.forward = self.decode  # its own method, set on the instance

        def decode(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"probs": torch.sigmoid(self.fc(z))}

    p = P()
    z = torch.randn(4, 2)
    return p.get_log_prob({"z": z, "x": torch.bernoulli(torch.full((4, 3), 0.5))}), p.sample({"z": z.clone()})["x"]


@pytest.mark.parametrize("program", [prog_forward_set_after_calls_then_deleted,
                                     prog_forward_set_in_init_of_a_subclass_without_one])
def test_a_forward_set_later_or_deleted_is_the_one_pixyz_calls(program: Any) -> None:
    ref, ours = run_both(program)
    assert_same(ref, ours)


def _vae_with_instance_forwards() -> Any:
    """A VAE of built-in families whose networks are set on the instances (``q.forward = ...``)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    from pixyz.distributions import Bernoulli, Normal

    q = Normal(var=["z"], cond_var=["x"], name="q")
    q.fc = nn.Linear(4, 4)
    q.forward = lambda x: {"loc": q.fc(x)[:, :2], "scale": F.softplus(q.fc(x)[:, 2:]) + 0.1}
    p = Bernoulli(var=["x"], cond_var=["z"], name="p")
    p.fc = nn.Linear(2, 4)
    p.forward = lambda **inputs: {"probs": torch.sigmoid(p.fc(inputs["z"]))}
    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
    return q, p, prior


def prog_products_expectations_and_training() -> Any:
    import torch

    from pixyz.losses import Expectation, KullbackLeibler, LogProb
    from pixyz.models import Model

    q, p, prior = _vae_with_instance_forwards()
    data = [torch.bernoulli(torch.full((5, 4), 0.4)) for _ in range(4)]  # all kept: new ids for Pixyz's cache
    joint = p * prior
    out = {"joint": joint.get_log_prob({"x": data[0], "z": torch.randn(5, 2)}),
           "draw": joint.sample(batch_n=3),
           "expectation": Expectation(q, LogProb(p)).eval({"x": data[0]})}
    loss = (KullbackLeibler(q, prior) - Expectation(q, LogProb(p))).mean()
    model = Model(loss, distributions=[p, q], optimizer=torch.optim.Adam, optimizer_params={"lr": 1e-2})
    out["train"] = [model.train({"x": x}) for x in data[1:]]
    out["parameters"] = [t.detach().clone() for t in (*p.parameters(), *q.parameters())]
    return out


def test_products_expectations_and_training_with_instance_forwards_match_pixyz() -> None:
    ref, ours = run_both(prog_products_expectations_and_training)
    assert_same(ref, ours)


def test_a_forward_set_on_the_instance_gives_pyro_sites_as_a_plain_pyro_twin() -> None:
    def build() -> Any:
        from pixyz.distributions import Normal

        w = torch.randn(2, 3)
        p = Normal(var=["x"], cond_var=["z"], scale=torch.tensor(0.5), name="p")
        p.forward = lambda z: {"loc": z @ w}
        prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
        return p * prior, w

    joint, w = run_pyro_dgm(build)
    x = torch.randn(5, 3)

    def twin(x: torch.Tensor) -> None:
        with pyro.plate("data", 5, dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ w, 0.5).to_event(1), obs=x)

    tr = poutine.trace(joint.model).get_trace(x=x)
    twin_tr = poutine.trace(poutine.replay(twin, trace=tr)).get_trace(x)
    assert torch.equal(tr.nodes["z"]["value"], twin_tr.nodes["z"]["value"])
    torch.testing.assert_close(tr.log_prob_sum(), twin_tr.log_prob_sum())
