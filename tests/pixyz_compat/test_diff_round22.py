"""Twenty-second round: a ``forward`` given after the distribution was built, under Pixyz 0.3.3 and here
(:mod:`pixyz_harness`).

Pixyz calls ``self(**inputs)``, which finds the ``forward`` of the moment: one set on the instance (``d.forward =
...``), even on a ``Deterministic`` built without one; one a later notebook cell gave the class (``P.forward = ...``);
one a subclass set on itself before ``super().__init__()``. Here a ``Deterministic`` raised ``NotImplementedError``,
a renaming made before the assignment kept the old binding (``TypeError: missing argument``), a forward given to the
class was never bound (``cond_var 'z' is used by no parameter``), and one set before ``super().__init__()`` was
bound but not called (``parameter loc is not given``).
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, run_both, run_pyro_dgm
from pixyz_parts import vae_parts


def _error(f: Any) -> str:
    try:
        f()
    except (ValueError, TypeError, NotImplementedError) as e:
        return type(e).__name__
    return "no error"


def prog_instance_forward_on_a_deterministic() -> Any:
    import torch

    from pixyz.distributions import Deterministic, Normal

    d = Deterministic(var=["x"], cond_var=["z"], name="d")
    renamed = d.replace_var(z="u")  # made before the forward is set
    prior = Normal(loc=torch.zeros(3), scale=torch.ones(3), var=["z"], name="p_{prior}")
    joint = d * prior
    w = torch.randn(3, 3)
    d.forward = lambda z: {"x": torch.tanh(z @ w)}
    z = torch.randn(4, 3)
    return {"sample": d.sample({"z": z}), "renamed": renamed.sample({"u": z}, return_all=False),
            "joint": joint.sample(batch_n=2)}


def prog_renamings_products_and_marginals_made_before() -> Any:
    import torch

    from pixyz.distributions import Normal

    p = Normal(var=["x"], cond_var=["z"], scale=torch.tensor(0.5), name="p")
    renamed = p.replace_var(z="u")
    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["u"], name="p_{prior}")
    joint = renamed * prior
    marginal = joint.marginalize_var("u")
    w = torch.randn(2, 3)
    p.forward = lambda z: {"loc": z @ w}
    u, x = torch.randn(4, 2), torch.randn(4, 3)
    return {"log_prob": renamed.get_log_prob({"u": u, "x": x}), "params": renamed.get_params({"u": u}),
            "joint": joint.get_log_prob({"u": u, "x": x}), "draw": joint.sample(batch_n=3),
            "marginal": marginal.sample(batch_n=2), "variance": renamed.sample_variance({"u": u})}


@pytest.mark.parametrize("program", [prog_instance_forward_on_a_deterministic,
                                     prog_renamings_products_and_marginals_made_before])
def test_a_forward_set_on_the_instance_reaches_what_was_made_of_it_before(program: Any) -> None:
    ref, ours = run_both(program)
    assert_same(ref, ours)


def _class_forward_program(kind: str) -> Any:
    def program() -> Any:
        import torch

        from pixyz.distributions import Deterministic, Normal

        w = torch.randn(2, 3)
        if kind == "deterministic":  # a Deterministic subclass without a forward
            class P(Deterministic):
                def __init__(self) -> None:
                    super().__init__(var=["x"], cond_var=["z"], name="p")

            def new(self: Any, z: torch.Tensor) -> dict[str, torch.Tensor]:
                return {"x": z @ w}
        else:
            class P(Normal):  # type: ignore[no-redef]
                def __init__(self) -> None:
                    super().__init__(var=["x"], cond_var=["z"], scale=torch.tensor(0.5), name="p")

                if kind == "mismatched":  # a network whose arguments are not the cond_var, fixed by a later cell
                    def forward(self, a: torch.Tensor) -> dict[str, torch.Tensor]:
                        return {"loc": a}

            def new(self: Any, z: torch.Tensor) -> dict[str, torch.Tensor]:
                return {"loc": z @ w}

        p = P()
        renamed = p.replace_var(z="u")
        P.forward = new
        z = torch.randn(4, 2)
        out: dict[str, Any] = {"sample": p.sample({"z": z}), "renamed": renamed.sample({"u": z})}
        if kind != "deterministic":
            x = torch.randn(4, 3)
            out["log_prob"] = p.get_log_prob({"z": z, "x": x}), renamed.get_log_prob({"u": z, "x": x})
        del P.forward  # the parent's again: no network (or the mismatched one)
        out["deleted"] = _error(lambda: p.sample({"z": torch.randn(4, 2)}))
        return out
    return program


@pytest.mark.parametrize("kind", ["no_network", "deterministic", "mismatched"])
def test_a_forward_given_later_to_the_class_is_called_as_under_pixyz(kind: str) -> None:
    ref, ours = run_both(_class_forward_program(kind))
    assert_same(ref, ours)


def prog_training_with_a_decoder_given_its_forward_later() -> Any:
    import torch
    from torch import nn

    from pixyz.distributions import Bernoulli
    from pixyz.losses import Expectation, KullbackLeibler, LogProb
    from pixyz.models import Model

    class P(Bernoulli):  # no forward yet
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(2, 4)

    q, _, prior, _ = vae_parts()
    p = P()
    loss = (KullbackLeibler(q, prior) - Expectation(q, LogProb(p))).mean()
    P.forward = lambda self, z: {"probs": torch.sigmoid(self.fc(z))}  # a later cell: after the loss was built
    model = Model(loss, distributions=[p, q], optimizer=torch.optim.Adam, optimizer_params={"lr": 1e-2})
    data = [torch.bernoulli(torch.full((5, 4), 0.4)) for _ in range(3)]  # kept: new ids for Pixyz's cache
    return [model.train({"x": x}) for x in data], [t.detach().clone() for t in p.parameters()]


def test_training_with_a_decoder_given_its_forward_later_matches_pixyz() -> None:
    ref, ours = run_both(prog_training_with_a_decoder_given_its_forward_later)
    assert_same(ref, ours)


def prog_forward_set_before_super_init() -> Any:
    import torch

    from pixyz.distributions import Deterministic, Normal

    class P(Normal):
        def __init__(self) -> None:
            self.forward = lambda z: {"loc": z * 2.0}
            super().__init__(var=["x"], cond_var=["z"], scale=torch.tensor(0.5), name="p")

    class D(Deterministic):
        def __init__(self) -> None:
            self.forward = lambda z: {"x": z - 1.0}
            super().__init__(var=["x"], cond_var=["z"], name="d")

    z = torch.randn(4, 2)
    return (P().get_log_prob({"z": z, "x": torch.randn(4, 2)}), P().sample({"z": z})["x"],
            D().sample({"z": z})["x"])


def test_a_forward_set_before_super_init_is_called_as_under_pixyz() -> None:
    ref, ours = run_both(prog_forward_set_before_super_init)
    assert_same(ref, ours)


def prog_constants_with_a_forward_set_then_deleted() -> Any:
    import torch

    from pixyz.distributions import Normal

    p = Normal(var=["x"], loc=torch.tensor(0.0), scale=torch.tensor(0.5), name="p")
    x = torch.randn(4, 2)
    calls = []
    p.forward = lambda: calls.append(1) or {}  # Pixyz calls it (the constants give the parameters)
    during = p.get_log_prob({"x": x})
    del p.forward
    return during, p.get_log_prob({"x": x}), len(calls)


def test_deleting_the_forward_of_a_distribution_of_constants_restores_its_constant_path() -> None:
    ref, ours = run_both(prog_constants_with_a_forward_set_then_deleted)
    assert_same(ref, ours)

    def program() -> Any:
        from pixyz.distributions import Normal

        p = Normal(var=["x"], loc=torch.tensor(0.0), scale=torch.tensor(0.5), name="p")
        built = p._dgm_const_only
        p.forward = lambda: {}
        during = p._dgm_const_only
        del p.forward
        return built, during, p._dgm_const_only

    # (the cached distribution of the constants, which a forward's call bypasses, serves the calls again)
    assert run_pyro_dgm(program) == (True, False, True)
