"""Forty-first round: the memoizer against Pixyz (an input made to require grad between two uses, inputs and weights
changed in place under ``torch.inference_mode`` or by a ``Deterministic``'s own forward), a marginal of a variable
named twice, and a flow subclass's own helper named ``forward_with_logdet``, under Pixyz and here
(:mod:`pixyz_harness`).
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, run_both, run_pyro_dgm


def _gradient_penalty_program() -> Any:
    import sympy
    import torch

    from pixyz.distributions import Deterministic
    from pixyz.losses.losses import Loss

    class Disc(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["t"], cond_var=["x"], name="d")
            self.fc = torch.nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> dict:
            return {"t": torch.sigmoid(self.fc(x))}

    class R1(Loss):
        """The mean of D(x) plus the R1 penalty ||dD/dx||^2 at the same data."""

        def __init__(self, d: Disc) -> None:
            super().__init__(["x"])
            self.d = d

        @property
        def _symbol(self) -> Any:
            return sympy.Symbol("R1")

        def forward(self, x_dict: dict, **kwargs: Any) -> Any:
            x = x_dict["x"]
            real = self.d.sample({"x": x})["t"].mean()
            x.requires_grad_(True)  # the same tensor, now requiring grad: its pass must have a graph to it
            out = self.d.sample({"x": x})["t"]
            g, = torch.autograd.grad(out.sum(), x, create_graph=True)
            return real + (g ** 2).sum(-1).mean(), x_dict

    d = Disc()
    value = R1(d).eval({"x": torch.randn(5, 3)})
    value.backward()
    return {"value": value, "grad": d.fc.weight.grad}


def test_an_input_made_to_require_grad_between_two_uses_gets_a_pass_with_a_graph_to_it() -> None:
    """An R1 gradient penalty: ``D(x)``, then ``x.requires_grad_(True)`` and ``D(x)`` again, differentiated with
    respect to ``x``. The memoizer keyed a tensor by its identity and version, which ``requires_grad_`` changes
    neither, so the second use got the first pass, with no graph to ``x``: ``autograd.grad`` raised (probe p214)."""
    ref, ours = run_both(_gradient_penalty_program)
    assert_same(ref, ours)


def _in_place_program(mode: str, change: str) -> Any:
    import torch

    from pixyz.distributions import Deterministic, Normal
    from pixyz.losses import Expectation, LogProb

    class Halve(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["y"], cond_var=["x"], name="f")
            self.w = torch.nn.Parameter(torch.ones(1))
            self.calls = 0

        def forward(self, x: torch.Tensor) -> dict:
            self.calls += 1
            if change == "input":
                x.div_(2.0)  # a forward that normalizes its input in place
                return {"y": x * 1.0}
            with torch.no_grad():
                self.w.mul_(0.5)  # one that changes its own weight in place
            return {"y": x * self.w}

    f = Halve()
    p = Normal(loc="y", scale=1.0, var=["z"], cond_var=["y"], name="p")
    term = Expectation(f, LogProb(p))
    loss = term.mean() + term.mean()  # f used twice in one evaluation: Pixyz runs it at each use
    with (torch.inference_mode() if mode == "inference_mode" else torch.no_grad()):
        x = torch.full((2, 1), 8.0)
        value = loss.eval({"x": x, "z": torch.zeros(2, 1)})
    return {"value": value.clone(), "x": x.clone(), "w": f.w.detach().clone(), "calls": f.calls}


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("change", ["input", "weight"])
def test_a_deterministic_that_changes_its_input_or_weight_in_place_runs_at_each_use(mode: str, change: str) -> None:
    """A ``Deterministic`` whose forward halves its input in place, or its own weight, used twice in one
    evaluation: Pixyz runs it twice. Under ``torch.inference_mode`` the memoizer keyed an inference tensor by its
    identity alone (it has no version counter), and it compared a Deterministic's buffers but not its parameters,
    so it ran once: -17.84 for -11.84 (probe p214)."""
    ref, ours = run_both(lambda: _in_place_program(mode, change))
    assert ref["calls"] == 2
    assert_same(ref, ours)


def _marginal_program() -> Any:
    import torch

    from pixyz.distributions import Normal

    p = Normal(loc="z", scale=1.0, var=["x"], cond_var=["z"], name="p")
    prior = Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["z"], name="p_{prior}")
    once, twice = (p * prior).marginalize_var(["z"]), (p * prior).marginalize_var(["z", "z"])
    return {"text": (once.prob_factorized_text, twice.prob_factorized_text), "str": str(twice),
            "var": (twice.var, twice.cond_var), "x": twice.sample(batch_n=3)["x"].shape}


def test_a_variable_named_twice_in_marginalize_var_is_integrated_once() -> None:
    r"""``marginalize_var(["z", "z"])`` printed ``\int \int p(x|z)p_{prior}(z)dz`` (two integrals, one ``dz``);
    Pixyz integrates the set of names: one integral (probe p215)."""
    ref, ours = run_both(_marginal_program)
    assert ref["text"][0] == ref["text"][1]
    assert_same(ref, ours)


def _flow_helper_program(helper: str) -> Any:
    import torch

    from pixyz.flows import Flow

    class Affine(Flow):
        def __init__(self) -> None:
            super().__init__(2)
            self.a = torch.nn.Parameter(torch.tensor([0.5, -0.3]))
            self.b = torch.nn.Parameter(torch.tensor([1.0, 2.0]))

        def forward(self, x: torch.Tensor, y: Any = None, compute_jacobian: bool = True) -> torch.Tensor:
            if compute_jacobian:
                self._logdet_jacobian = self.a.sum().expand(x.shape[0])
            return x * self.a.exp() + self.b

        def inverse(self, z: torch.Tensor, y: Any = None) -> torch.Tensor:
            return (z - self.b) * (-self.a).exp()

    class OneArgument(Affine):  # a helper of the user's own (Pixyz's Flow has no such name)
        def forward_with_logdet(self, x: torch.Tensor) -> Any:
            return self.forward(x), self.logdet_jacobian

    class OtherOrder(Affine):
        def forward_with_logdet(self, x: torch.Tensor, y: Any = None) -> Any:
            z = self.forward(x)
            return self.logdet_jacobian, z

    f = {"one": OneArgument, "order": OtherOrder}[helper]()
    x = torch.randn(4, 2)
    return {"z": f(x), "logdet": f.logdet_jacobian, "helper": f.forward_with_logdet(x)[0 if helper == "order" else 1],
            "a": f.a.detach().sum()}


@pytest.mark.parametrize("helper", ["one", "order"])
def test_a_flow_subclass_helper_named_forward_with_logdet_is_left_to_it(helper: str) -> None:
    """Pixyz's ``Flow`` has no ``forward_with_logdet``: a subclass may define a helper of that name with its own
    arguments and results, which its code calls. pyro_dgm's own log-det path (torch's
    ``log_abs_det_jacobian``) called it: a bare ``TypeError`` for a helper of one argument, or the helper's ``z``
    returned as the log-det (WRONG, silent, probe p213). It calls its own now; the closed form is ``sum(a)``."""
    ref, ours = run_both(lambda: _flow_helper_program(helper))
    assert_same(ref, ours)

    def ours_logdet() -> Any:
        import torch

        from pixyz.flows import Flow

        class Affine(Flow):
            def __init__(self) -> None:
                super().__init__(2)
                self.a = torch.nn.Parameter(torch.tensor([0.5, -0.3]))

            def forward(self, x: torch.Tensor, y: Any = None, compute_jacobian: bool = True) -> torch.Tensor:
                if compute_jacobian:
                    self._logdet_jacobian = self.a.sum().expand(x.shape[0])
                return x * self.a.exp()

            def inverse(self, z: torch.Tensor, y: Any = None) -> torch.Tensor:
                return z * (-self.a).exp()

            def forward_with_logdet(self, x: torch.Tensor) -> Any:  # the user's own helper, one argument
                return self.forward(x), None

        f = Affine()
        x = torch.randn(4, 2)
        base = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), torch.ones(2)), 1)
        pushed = torch.distributions.TransformedDistribution(base, [f])
        z = x * f.a.exp()
        expected = base.log_prob(z * (-f.a).exp()) - f.a.sum()  # change of variables, closed form
        return f.log_abs_det_jacobian(x, z), pushed.log_prob(z), expected

    logdet, log_prob, expected = run_pyro_dgm(ours_logdet)
    torch.testing.assert_close(logdet, torch.full((4,), 0.2))
    torch.testing.assert_close(log_prob, expected)
