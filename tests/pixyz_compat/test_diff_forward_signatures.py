"""A network's ``forward`` receives each ``cond_var`` under its own name, whatever the signature, as in Pixyz (which
calls ``forward(**inputs)``); programs run under both libraries (:mod:`pixyz_harness`).

Before, pyro_dgm passed the inputs positionally in the order of forward's arguments that are in ``cond_var``, so in
``forward(self, x, h_prev=None, z_prev=None)`` with ``cond_var=["x", "z_prev"]`` the value of ``z_prev`` arrived as
``h_prev`` (and ``z_prev`` was None): a TypeError, or silently other numbers when both had the same shape. A
keyword-only argument (``forward(self, *, x)``) was passed positionally too: a TypeError.

A ``forward(**inputs)`` gets the inputs and nothing else, as under Pixyz: a graph's options and keywords of ``eval``
or ``Model.train`` went into ``**inputs`` too. A keyword that ``forward`` names as a parameter does reach it here
(Pixyz drops it: a documented difference).
"""
from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from pixyz_harness import assert_same, run_both, same


def _program(signature: str) -> Any:
    """A q(z|x, s) and a Deterministic d(h|x, s), whose forward has the given shape of signature; each is drawn,
    scored and trained in a Model, and forward records the names under which it got each input."""
    def program() -> Any:
        import torch
        from torch import nn, optim
        from pixyz.distributions import Deterministic, Normal
        from pixyz.losses import Expectation, KullbackLeibler, LogProb
        from pixyz.models import Model

        seen: list[Any] = []

        def net_inputs(x: Any = None, s: Any = None, other: Any = None, **rest: Any) -> Any:
            # the features that reached forward under each name (a wrongly routed value shows up here)
            seen.append(sorted(k for k, v in {"x": x, "s": s, "other": other, **rest}.items() if v is not None))
            return torch.cat([x, 2 * s], -1)

        if signature == "gap":  # an argument that is not a cond_var, with a default, between two that are
            def forward(self, x, other=None, s=None):
                return net_inputs(x=x, s=s, other=other)
        elif signature == "defaults_only":  # both cond_vars after the gap
            def forward(self, other=None, x=None, s=None):
                return net_inputs(x=x, s=s, other=other)
        elif signature == "reversed":  # in the other order than cond_var
            def forward(self, s, x):
                return net_inputs(x=x, s=s)
        elif signature == "keyword_only":
            def forward(self, *, x, s):
                return net_inputs(x=x, s=s)
        elif signature == "mixed":  # one positional, one keyword-only
            def forward(self, x, *, s):
                return net_inputs(x=x, s=s)
        else:  # "var_keyword": one named, the other through **kwargs
            def forward(self, s, **kwargs):
                return net_inputs(s=s, **kwargs)

        class Q(Normal):
            def __init__(self):
                super().__init__(var=["z"], cond_var=["x", "s"], name="q")
                self.fc = nn.Linear(3, 4)

            def head(self, features):
                o = self.fc(features)
                return {"loc": o[..., :2], "scale": nn.functional.softplus(o[..., 2:]) + 0.1}

        class D(Deterministic):
            def __init__(self):
                super().__init__(var=["h"], cond_var=["x", "s"], name="d")
                self.fc = nn.Linear(3, 3)

            def head(self, features):
                return {"h": self.fc(features)}

        # each class's forward has the signature's arguments and passes the features to its head
        Q.forward, D.forward = _with_signature(forward), _with_signature(forward)
        q, d = Q(), D()
        p = Normal(var=["x"], cond_var=["z"], loc="z", scale=torch.tensor(1.0), name="p")
        prior = Normal(var=["z"], loc=torch.tensor(0.0), scale=torch.tensor(1.0), features_shape=[2], name="p_z")
        x, s = torch.randn(3, 2), torch.randn(3, 1) + 5.0
        out: dict[str, Any] = {"draw": q.sample({"x": x, "s": s}), "h": d.sample({"x": x, "s": s})["h"],
                               "log_prob": q.get_log_prob({"x": x, "s": s, "z": torch.zeros(3, 2)})}
        loss = (KullbackLeibler(q, prior) - Expectation(q, LogProb(p))).mean()
        model = Model(loss, distributions=[q], optimizer=optim.SGD, optimizer_params={"lr": 0.1})
        out["steps"] = [model.train({"x": x.clone(), "s": s.clone()}) for _ in range(2)]
        out["weights"] = [w.detach().clone() for w in q.parameters()]
        out["seen"] = sorted(set(map(tuple, seen)))
        return out

    def _with_signature(features: Any) -> Any:
        import functools

        @functools.wraps(features)  # inspect.signature follows __wrapped__ to the signature under test
        def forward(self, *args, **kwargs):
            return self.head(features(self, *args, **kwargs))
        return forward
    return program


SIGNATURES = ["gap", "defaults_only", "reversed", "keyword_only", "mixed", "var_keyword"]


@pytest.mark.parametrize("signature", SIGNATURES)
def test_each_input_reaches_forward_under_its_name(signature: str) -> None:
    ref, ours = same(_program(signature))
    assert ref["seen"] == [("s", "x")]  # the program does route every input by name (under Pixyz)


def _catch_all_program() -> Any:
    """A network that reads its inputs from ``forward(**inputs)``, in a joint whose graph has an option for every
    call (``feature_dims``, which only scoring reads) and in losses evaluated with a keyword Pixyz drops
    (``model.test(data, flag=True)``): under Pixyz forward gets exactly the inputs. We passed the option and the
    keyword into ``**inputs`` too, and ``torch.cat(list(inputs.values()))`` raised."""
    import torch
    from torch import nn
    from pixyz.distributions import Normal
    from pixyz.losses import LogProb
    from pixyz.models import Model

    class Child(Normal):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z", "y"], name="p")
            self.net = nn.Linear(3, 2)

        def forward(self, **inputs):
            h = self.net(torch.cat([inputs[k] for k in sorted(inputs)], -1))
            return {"loc": h, "scale": torch.ones_like(h)}

    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
    joint = Child() * prior
    joint.graph.set_option({"feature_dims": [1]})
    y = torch.randn(4, 1)
    drawn = joint.sample({"y": y}, batch_n=4)
    model = Model(-LogProb(joint).mean(), distributions=[joint], optimizer_params={"lr": 0.1})
    def data():  # a fresh copy each step: Pixyz's cache would reuse the last step's freed graph for the same tensors
        return {k: v.detach().clone() for k, v in drawn.items()}

    return drawn, joint.get_log_prob(data()), [model.train(data(), flag=True) for _ in range(2)], model.test(
        data(), flag=True)


def test_a_catch_all_forward_gets_only_the_inputs() -> None:
    same(_catch_all_program)


def _named_keyword_program() -> Any:
    """``forward(self, y, factor=1.0)`` evaluated with ``factor=0.0``: the loss of ``x = 0`` under N(factor * net(y),
    1), without and with the keyword."""
    import torch
    from torch import nn
    from pixyz.distributions import Normal
    from pixyz.losses import LogProb

    class Scaled(Normal):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["y"], name="p")
            self.net = nn.Linear(1, 1)

        def forward(self, y, factor=1.0):
            return {"loc": factor * self.net(y), "scale": torch.ones_like(y)}

    loss = -LogProb(Scaled()).mean()
    data = {"x": torch.zeros(4, 1), "y": torch.ones(4, 1)}
    return loss.eval(dict(data)), loss.eval(dict(data), factor=0.0)


def test_a_keyword_that_forward_names_reaches_it_here_pixyz_drops_it() -> None:
    """A documented difference (``docs/porting.md``): Pixyz drops the keyword, so ``forward`` runs with its default
    and both values are the same; here it reaches ``forward``: 0.5 log(2 pi), the loss of x = 0 under N(0, 1)."""
    (pixyz_default, pixyz_keyword), (ours_default, ours_keyword) = run_both(_named_keyword_program)
    assert torch.equal(pixyz_keyword, pixyz_default)
    assert_same(pixyz_default, ours_default)
    assert float(ours_keyword.detach()) == pytest.approx(0.5 * math.log(2 * math.pi))
