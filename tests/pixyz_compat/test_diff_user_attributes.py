"""A Pixyz subclass names its own attributes and helper methods as it likes: pyro_dgm's internals must not take them.

pyro_dgm keeps its private state under ``_dgm_`` names, and its public attributes that Pixyz lacks (``factors``,
``binding``, ...) yield to a value that a subclass assigns. A Pixyz program whose networks use those names
(``self._params = ...``, ``self.factors = 3``, a helper ``def _base(self, h)``) must run here as under Pixyz, with the
same numbers. Before the ``_dgm_`` prefix, 36 such names broke a subclass here (a ``TypeError`` or
``AttributeError`` at its first draw, or other numbers), while Pixyz ran it.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest
import torch
from pixyz_harness import assert_same, run_both
from torch import nn

# pyro_dgm's settings of a distribution (assigning them configures it, as documented) and the class attributes that
# define a family: a subclass that assigns one of these gets pyro_dgm's meaning (docs/porting.md lists them)
RESERVED = {"pyro_name", "pyro_infer", "factor_options", "global_options", "memoizable",
            "pyro_dist", "param_groups", "buffer_order", "sample_mean_draws"}


def _distributions(lib: Any) -> list[Any]:
    """A constant distribution, one with a network, a product, a renaming and a marginal of ``lib``."""
    class Q(lib.Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loc": self.fc(x), "scale": torch.ones_like(x)}

    prior = lib.Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"])
    q = Q()
    joint = q * prior
    return [prior, q, joint, joint.replace_var(z="w"), joint.marginalize_var("z")]


def _losses(lib: Any) -> list[Any]:
    """Losses of every kind of node: a density, a KL, an expectation, arithmetic, an iteration."""
    dists = importlib.import_module(lib.__name__.replace("losses", "distributions"))
    _, q, joint, _, _ = _distributions(dists)
    prior = dists.Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"])
    kl = lib.KullbackLeibler(q, prior)
    step = lib.LogProb(q)

    class D(dists.Deterministic):  # a discriminator (Pixyz sets the adversarial terms' private names in __init__)
        def __init__(self) -> None:
            super().__init__(var=["t"], cond_var=["x"], name="d")
            self.fc = nn.Linear(2, 1)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"t": torch.sigmoid(self.fc(x))}

    data = dists.EmpiricalDistribution(["x"])
    return [lib.LogProb(joint), kl, lib.Expectation(q, lib.LogProb(prior)), (-kl + step).mean() * 2,
            lib.IterativeLoss(step, max_iter=2, series_var=["x"]), lib.AdversarialJensenShannon(prior.replace_var(
                z="x"), data, D()), lib.AdversarialWassersteinDistance(prior.replace_var(z="x"), data, D())]


def _models(lib: Any) -> list[Any]:
    """A Model that has trained one step."""
    dists = importlib.import_module(lib.__name__.replace("models", "distributions"))
    losses = importlib.import_module(lib.__name__.replace("models", "losses"))
    _, q, *_ = _distributions(dists)
    model = lib.Model(-losses.LogProb(q).mean(), distributions=[q], optimizer=torch.optim.Adam)
    model.train({"x": torch.ones(3, 2), "z": torch.ones(3, 2)})
    return [model]


def _flows(lib: Any) -> list[Any]:
    """A flow of each kind: planar, channel-wise, reshaping, a list of them (and a coupling of pyro_dgm's: Pixyz's
    takes other arguments)."""
    flows = [lib.PlanarFlow(2), lib.ActNorm2d(2), lib.Squeeze(), lib.FlowList([lib.PlanarFlow(2), lib.BatchNorm1d(2)])]
    if lib.__name__.startswith("pyro_dgm"):
        flows.append(lib.AffineCoupling(2, scale_translate_net=nn.Linear(1, 2)))
    return flows


KINDS = {"distributions": _distributions, "losses": _losses, "models": _models, "flows": _flows}
BASES = {"distributions": "Distribution", "losses": "Loss", "models": "Model", "flows": "Flow"}


def _names(lib: Any, kind: str) -> set[str]:
    """The attribute names that the classes of ``lib`` (a module of Pixyz or pyro_dgm) and their instances carry,
    past ``nn.Module``'s and Pyro's ``ELBO``'s (the loss terms here are ELBOs: those names are Pyro's contract)."""
    import pyro.distributions.transforms as T
    from pyro.infer import ELBO
    transform = T.Planar(2)  # a flow here is a Pyro TransformModule: torch's Transform names are torch's contract
    foreign = set(dir(nn.Module())) | set(vars(nn.Module())) | set(dir(ELBO)) | set(dir(transform)) | set(
        vars(transform)) | {"_abc_impl"}
    base = getattr(importlib.import_module(f"{lib.__name__}.losses" if kind == "losses" else lib.__name__),
                   BASES[kind])
    names: set[str] = set()
    for value in vars(lib).values():
        if inspect.isclass(value) and issubclass(value, base):
            names |= set(dir(value))
    objs = list(KINDS[kind](lib))
    if kind == "distributions":  # the flow distributions' own names (Pixyz keeps _flow_input_var in the instance)
        prior = lib.Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"])
        flows = importlib.import_module(lib.__name__.replace("distributions", "flows"))
        objs += [lib.TransformedDistribution(prior, flows.PlanarFlow(2), var=["x"]),
                 lib.InverseTransformedDistribution(prior, flows.PlanarFlow(2), var=["x"])]
    for obj in objs:
        names |= set(dir(obj)) | set(vars(obj))
    return {n for n in names if not n.startswith("__")} - foreign


def _ours_and_pixyz(kind: str = "distributions") -> tuple[set[str], set[str]]:
    return (_names(importlib.import_module(f"pyro_dgm.{kind}"), kind),
            _names(importlib.import_module(f"pixyz.{kind}"), kind))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_private_names_of_ours_carry_the_prefix(kind: str) -> None:
    ours, pixyz = _ours_and_pixyz(kind)
    loose = sorted(n for n in ours - pixyz if n.startswith("_") and not n.startswith("_dgm_")
                   and n != "_repr_latex_")  # IPython's display protocol
    assert not loose, f"private names of pyro_dgm.{kind} that a Pixyz subclass may also use: {loose}; prefix " \
                      "them with _dgm_"


def _user_names_of(kind: str, reserved: set[str]) -> list[str]:
    """Every name a Pixyz subclass of ``kind`` may pick that pyro_dgm uses for itself: the private ones without their
    prefix, and the public ones that Pixyz lacks, but ``reserved``."""
    ours, pixyz = _ours_and_pixyz(kind)
    private = {n[len("_dgm"):] for n in ours if n.startswith("_dgm_")}
    public = {n for n in ours if not n.startswith("_")}
    return sorted((private | public) - pixyz - reserved)


def _user_names() -> list[str]:
    """Every name a Pixyz distribution subclass may pick that pyro_dgm uses for itself."""
    return _user_names_of("distributions", RESERVED)


def _program(names: list[str], value: Any) -> Any:
    def program() -> Any:
        import torch
        from torch import nn
        from torch.nn import functional as F
        from pixyz.distributions import Bernoulli, Normal
        from pixyz.losses import Expectation as E, KullbackLeibler, LogProb
        from pixyz.models import Model

        def own(module: nn.Module) -> None:
            for n in set(names) - {"_params", "factors", "_order", "binding", "_base", "_fn"}:  # the program's own
                setattr(module, n, value() if callable(value) else value)

        class Inference(Normal):
            def __init__(self):
                super().__init__(var=["z"], cond_var=["x"], name="q")
                self.fc1 = nn.Linear(6, 8)
                self.fc2 = nn.Linear(8, 4)
                own(self)
                self._params = {"scale_floor": 0.1}  # the subclass reads its own values back in forward
                self.factors = 2

            def _base(self, h):  # a helper method under a name pyro_dgm used for one of its own
                return F.relu(self.fc1(h))

            def forward(self, x):
                o = self.fc2(self._base(x))
                return {"loc": o[..., :2] * (self.factors / 2),
                        "scale": F.softplus(o[..., 2:]) + self._params["scale_floor"]}

        class Generator(Bernoulli):
            def __init__(self):
                super().__init__(var=["x"], cond_var=["z"], name="p")
                self.fc = nn.Linear(2, 6)
                own(self)
                self._order = [0, 1]
                self.binding = nn.Identity()  # a submodule under a public name of pyro_dgm's

            def _fn(self, z):
                return self.binding(self.fc(z[..., self._order]))

            def forward(self, z):
                return {"probs": torch.sigmoid(self._fn(z))}

        q, p = Inference(), Generator()
        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2],
                       name="p_{prior}")
        x = torch.bernoulli(torch.full((5, 6), 0.4))
        out: dict[str, Any] = {"read_back": [q.factors, q._params, type(p.binding).__name__, p._order]}
        out["draw"] = q.sample({"x": x.clone()})["z"]
        out["log_prob"] = (p * prior).get_log_prob({"x": x.clone(), "z": torch.zeros(5, 2)})
        out["joint_draw"] = (p * prior).sample(batch_n=3)
        out["kl"] = KullbackLeibler(q, prior).eval({"x": x.clone()})
        loss = (KullbackLeibler(q, prior) - E(q, LogProb(p))).mean()
        out["loss"] = loss.eval({"x": x.clone()})
        model = Model(loss, distributions=[q, p], optimizer=torch.optim.Adam, optimizer_params={"lr": 0.05})
        out["steps"] = [model.train({"x": x.clone()}) for _ in range(3)]
        out["test"] = model.test({"x": x.clone()})
        out["text"] = [q.prob_text, (p * prior).prob_factorized_text]
        return out
    return program


def test_the_names_are_found() -> None:
    names = _user_names()
    # the names that broke a subclass before the prefix; the list is computed, so it must at least hold them
    assert {"_params", "_base", "_order", "_fn", "_b", "_site", "factors", "binding", "sampling_order",
            "draw_factor", "score_factor", "required_input_var"} <= set(names)


@pytest.mark.parametrize("value", [3, "s", None, lambda: torch.zeros(1)], ids=["int", "str", "None", "tensor"])
def test_a_subclass_may_use_our_names_for_its_own(value: Any) -> None:
    ref, ours = run_both(_program(_user_names(), value))
    assert ref["read_back"] == [2, {"scale_floor": 0.1}, "Identity", [0, 1]]
    assert_same(ref, ours)


def test_a_subclass_may_register_modules_under_our_names() -> None:
    ref, ours = run_both(_program(_user_names(), lambda: nn.Linear(1, 1, bias=False)))
    assert_same(ref, ours)


def test_a_subclass_may_register_parameters_and_buffers_under_our_yielding_names() -> None:
    """A parameter or buffer under a name of one of pyro_dgm's methods is refused by torch ("attribute already
    exists"), as it would be under one of Pixyz's; the private names and the yielding public ones take them."""
    import pyro_dgm.distributions
    cls = pyro_dgm.distributions.Normal
    names = [n for n in _user_names()
             if getattr(inspect.getattr_static(cls, n, None), "yields", False) or not hasattr(cls, n)]
    assert {"factors", "binding", "register_params", "_params"} <= set(names)
    ref, ours = run_both(_program(names, lambda: nn.Parameter(torch.zeros(1))))
    assert_same(ref, ours)

    def with_buffers() -> Any:
        from pixyz.distributions import Normal

        class Q(Normal):
            def __init__(self):
                super().__init__(var=["z"], cond_var=["x"])
                for n in names:
                    self.register_buffer(n, torch.full((1,), 2.))

            def forward(self, x):
                return {"loc": x + self.factors, "scale": self.binding * torch.ones_like(x)}
        q = Q()
        return q.sample({"x": torch.zeros(3, 1)}, sample_mean=True), q.get_log_prob({"x": torch.zeros(3, 1),
                                                                                     "z": torch.ones(3, 1)})
    ref, ours = run_both(with_buffers)
    assert_same(ref, ours)


def _loss_and_model_program(loss_names: list[str], model_names: list[str], value: Any) -> Any:
    def program() -> Any:
        import sympy
        import torch
        from torch import nn
        from torch.nn import functional as F
        from pixyz.distributions import Normal
        from pixyz.losses import KullbackLeibler
        from pixyz.losses.losses import Loss
        from pixyz.models import Model

        def own(obj: Any, names: list[str]) -> None:
            for n in names:
                setattr(obj, n, value() if callable(value) else value)

        class Q(Normal):
            def __init__(self):
                super().__init__(var=["z"], cond_var=["x"], name="q")
                self.fc = nn.Linear(3, 4)

            def forward(self, x):
                o = self.fc(x)
                return {"loc": o[..., :2], "scale": F.softplus(o[..., 2:]) + 0.1}

        class P(Normal):
            def __init__(self):
                super().__init__(var=["x"], cond_var=["z"], name="p")
                self.fc = nn.Linear(2, 3)

            def forward(self, z):
                return {"loc": self.fc(z), "scale": torch.ones(3)}

        q, p = Q(), P()
        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2])

        class Reconstruction(Loss):  # a user-defined loss, as Pixyz's Loss API tutorial writes one
            def __init__(self, q, p):
                super().__init__(q.input_var)
                self.q, self.p = q, p
                own(self, loss_names)

            @property
            def _symbol(self):
                return sympy.Symbol("R")

            def forward(self, x_dict, **kwargs):
                s = self.q.sample(x_dict, reparam=True)
                return -self.p.get_log_prob(s), s

        loss = (Reconstruction(q, p) + KullbackLeibler(q, prior)).mean()

        class Trainer(Model):
            def __init__(self):
                super().__init__(loss, distributions=[q, p], optimizer=torch.optim.Adam,
                                 optimizer_params={"lr": 0.05})
                own(self, model_names)

        x = torch.randn(4, 3)
        out = {"text": loss.loss_text, "value": loss.eval({"x": x.clone()})}
        model = Trainer()
        out["steps"] = [model.train({"x": x.clone()}) for _ in range(3)]
        out["test"] = model.test({"x": x.clone()})
        return out
    return program


# Loss.latex is the hook that gives a pyro_dgm loss its formula (as Pixyz's _symbol does); Model.step counts the
# training steps (an int assigned to it is counted on from)
LOSS_RESERVED = {"latex"}
MODEL_RESERVED = {"step"}


@pytest.mark.parametrize("value", [3, None, lambda: nn.Linear(1, 1)], ids=["int", "None", "module"])
def test_a_loss_or_model_subclass_may_use_our_names_for_its_own(value: Any) -> None:
    program = _loss_and_model_program(_user_names_of("losses", LOSS_RESERVED),
                                      _user_names_of("models", MODEL_RESERVED), value)
    ref, ours = run_both(program)
    assert_same(ref, ours)


FLOW_RESERVED: set[str] = set()


@pytest.mark.parametrize("value", [3, None, lambda: nn.Linear(1, 1)], ids=["int", "None", "module"])
def test_a_flow_subclass_may_use_our_names_for_its_own(value: Any) -> None:
    names = _user_names_of("flows", FLOW_RESERVED)
    assert {"_size", "_check", "_logdet", "_memory", "_auto"} <= set(names)

    def program() -> Any:
        import torch
        from torch import nn
        from pixyz.distributions import InverseTransformedDistribution, Normal
        from pixyz.flows import Flow, FlowList
        from pixyz.losses import LogProb
        from pixyz.models import Model

        class Scale(Flow):  # a flow written for Pixyz: forward stores the log-det, inverse undoes forward
            def __init__(self, in_features):
                super().__init__(in_features)
                self.log_scale = nn.Parameter(torch.full((in_features,), 0.3))
                for n in names:
                    setattr(self, n, value() if callable(value) else value)

            def forward(self, x, y=None, compute_jacobian=True):
                if compute_jacobian:
                    self._logdet_jacobian = self.log_scale.sum() * torch.ones(x.shape[0])
                return x * self.log_scale.exp()

            def inverse(self, z, y=None):
                return z * (-self.log_scale).exp()

        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2])
        p = InverseTransformedDistribution(prior, flow=FlowList([Scale(2), Scale(2)]), var=["x"])
        x = torch.randn(5, 2)
        out = {"sample": p.sample(batch_n=3), "text": str(p), "log_prob": p.get_log_prob({"x": x.clone()})}
        model = Model(-LogProb(p).mean(), distributions=[p], optimizer=torch.optim.Adam,
                      optimizer_params={"lr": 0.05})
        out["steps"] = [model.train({"x": x.clone()}) for _ in range(2)]
        return out
    ref, ours = run_both(program)
    assert_same(ref, ours)


def test_a_value_torch_refuses_under_a_yielding_name_leaves_nothing_behind() -> None:
    from pyro_dgm.distributions import Normal
    p = Normal(loc=0., scale=1., var=["x"])
    with pytest.raises(TypeError):
        p.register_parameter("factors", torch.zeros(1))  # not an nn.Parameter: torch refuses it
    with pytest.raises(TypeError):
        p.register_buffer("binding", 3)  # not a tensor
    assert "factors" not in p._parameters and "binding" not in p._buffers
    assert p.factors == (p,) and list(p.binding.var) == ["x"]  # pyro_dgm's own values, not a stand-in
    p.register_buffer("factors", torch.ones(2))
    assert torch.equal(p.factors, torch.ones(2)) and p._dgm_factors == (p,)
