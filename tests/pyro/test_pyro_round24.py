"""Pyro's ``pyro.optim`` optimizers with per-parameter arguments (a callable ``optim_args``) in pyro_dgm's models,
called as Pyro's ``PyroOptim`` calls them (probe p233): with one argument, the parameter's name in
``named_parameters()``'s form; with two, the module's name and the parameter's, both strings. pyro_dgm called them
with a made-up name (``"param_0"``) and the parameter tensor: a one-argument function was refused, and a
two-argument one that reads the names got a tensor or the wrong name. The reference is Pyro's own ``SVI`` on the
same distribution's model, whose param store names the parameters ``<pyro_name>$$$<parameter>``.
"""
from __future__ import annotations

from typing import Any

import pyro
import pyro.optim
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

from pyro_dgm.distributions import Normal
from pyro_dgm.losses import LogProb
from pyro_dgm.models import Model


class P(Normal):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["y"], name="p")
        self.loc = torch.nn.Linear(2, 2)
        self.sc = torch.nn.Linear(2, 2)

    def forward(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": self.loc(y), "scale": torch.nn.functional.softplus(self.sc(y))}


def _rates(calls: list[tuple[str, ...]]) -> Any:
    def one(param_name: str) -> dict[str, float]:
        calls.append((param_name,))
        return {"lr": 0.1 if param_name.split(".")[-2:-1] == ["loc"] else 0.01}

    def two(module_name: str, param_name: str) -> dict[str, float]:
        calls.append((module_name, param_name))
        return {"lr": 0.1 if param_name.startswith("loc.") else 0.01}

    return one, two


@pytest.mark.parametrize("argc", [1, 2])
def test_per_parameter_arguments_get_the_names_pyros_svi_gives_them(argc: int) -> None:
    """The same function, given to ``Model`` and to Pyro's ``SVI`` over the distribution's ``model``/``guide``: it
    is called with the same strings for the same parameters, and each parameter gets the same learning rate."""
    ours: list[tuple[str, ...]] = []
    torch.manual_seed(0)
    p = P()
    model = Model(-LogProb(p).mean(), distributions=[p], optimizer=pyro.optim.Adam(_rates(ours)[argc - 1]))
    lr_ours = {ours[i]: g["lr"] for i, g in enumerate(model.optimizer.param_groups)}

    theirs: list[tuple[str, ...]] = []
    pyro.clear_param_store()
    svi = SVI(p.model, lambda **kw: None, pyro.optim.Adam(_rates(theirs)[argc - 1]), Trace_ELBO())
    svi.step(x=torch.randn(5, 2), y=torch.randn(5, 2))
    lr_pyro = {theirs[i]: o.param_groups[0]["lr"] for i, o in enumerate(svi.optim.optim_objs.values())}

    assert all(isinstance(a, str) for call in ours for a in call)
    assert sorted(lr_ours.items()) == sorted(lr_pyro.items())
    assert sorted(lr_ours.values()) == [0.01, 0.01, 0.1, 0.1]
    pyro.clear_param_store()


class Dec(Normal):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["y"], name="p")
        self.dec = torch.nn.Linear(2, 3)

    def forward(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": self.dec(y), "scale": torch.ones(3)}


class PY(Normal):
    def __init__(self) -> None:
        super().__init__(var=["y"], name="py", features_shape=[2])
        self.m = torch.nn.Parameter(torch.zeros(2))

    def forward(self) -> dict[str, torch.Tensor]:
        return {"loc": self.m[None], "scale": torch.ones(1, 2)}


@pytest.mark.parametrize("case", ["product", "replace_var", "marginal"])
def test_a_composites_factors_get_their_own_names_as_in_pyros_param_store(case: str) -> None:
    """A product, a renaming or a marginal in ``distributions=[...]``: its factors register their networks under
    their own names (``p(x|y)$$$dec.weight``, ``py(y)$$$m``), and Pyro's ``SVI`` calls the per-parameter arguments
    with those; pyro_dgm called them with the composite's formula and its internal path (``'p(x,y)'``,
    ``'_graph.0.dec.weight'``), so the decoder got another learning rate (probe p234). Five steps of each give the
    same weights."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 3, generator=g), torch.randn(6, 2, generator=g)
    calls: list[tuple[str, str]] = []

    def rate(module_name: str, param_name: str) -> dict[str, float]:
        calls.append((module_name, param_name))
        return {"lr": 0.1 if param_name.startswith("dec.") else 0.001}

    torch.manual_seed(0)
    p, py = Dec(), PY()
    if case == "product":
        d, data = p * py, {"x": x, "y": y}
    elif case == "replace_var":
        d, data = p.replace_var(y="w"), {"x": x, "w": y}
    else:
        d, data = (p * py).marginalize_var("y"), {"x": x}
    start = {k: v.clone() for k, v in d.state_dict().items()}
    pyro.clear_param_store()
    model = Model(-LogProb(d).sum() if case != "marginal" else -LogProb(p * py).sum(), distributions=[d],
                  optimizer=pyro.optim.Adam(rate))
    ours_calls = sorted(calls)
    if case == "marginal":  # (its factors' names; trained on the joint's log-density)
        data = {"x": x, "y": y}
    for _ in range(5):
        model.train(data)
    ours = p.dec.weight.detach().clone()

    d.load_state_dict(start)
    d.zero_grad(set_to_none=True)
    pyro.clear_param_store()
    calls.clear()
    joint = p * py if case == "marginal" else d
    svi = SVI(joint.model, lambda **kw: None, pyro.optim.Adam(rate), Trace_ELBO())
    for _ in range(5):
        svi.step(**data)
    assert ours_calls == sorted(set(calls))
    torch.testing.assert_close(ours, p.dec.weight.detach(), rtol=1e-6, atol=1e-7)
    pyro.clear_param_store()


def _clipped_weights(clips: list[Any], steps: int) -> list[torch.Tensor]:
    """The decoder's weights after ``steps`` SGD steps of a ``Model`` with each ``clip_args`` (None: none given),
    from the same initial weights and data."""
    g = torch.Generator().manual_seed(2)
    x, y = 5 * torch.randn(6, 3, generator=g), torch.randn(6, 2, generator=g)
    weights = []
    for clip in clips:
        torch.manual_seed(0)
        p = Dec()
        opt = pyro.optim.SGD({"lr": 0.05}) if clip is None else pyro.optim.SGD({"lr": 0.05}, clip)
        model = Model(-LogProb(p).sum(), distributions=[p], optimizer=opt)
        for _ in range(steps):
            model.train({"x": x, "y": y})
        weights.append(p.dec.weight.detach().clone())
    return weights


def test_a_callable_clip_args_is_called_as_pyro_calls_it() -> None:
    """``pyro.optim.SGD({...}, clip_args=lambda module_name, param_name: {...})``: Pyro's ``SVI`` takes it; a
    ``Model`` raised a bare "'function' object is not iterable" (probe p234). The same clipping for every parameter
    is the model's clipping (the weights after 3 steps are those of the same dict given as ``clip_args``);
    different clippings per parameter, which a model cannot apply, raise a ``ValueError`` naming them."""
    weights = _clipped_weights([{"clip_norm": 0.3}, lambda module_name, param_name: {"clip_norm": 0.3}], 3)
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"per-parameter clip_args differ between parameters.*dec\.weight"):
        Model(-LogProb(Dec()).sum(), distributions=[Dec()], optimizer=pyro.optim.SGD(
            {"lr": 0.05}, lambda m, n: {"clip_norm": 0.3 if n.endswith("weight") else 10.0}))


def test_adagrad_rmsprop_trains_an_autoguide_adopted_by_a_model_as_svi_does() -> None:
    """``pyro.optim.AdagradRMSProp`` with an ``AutoNormal`` in a ``PyroELBO`` term: the model adds the autoguide's
    parameters to its optimizer at the first step, and this optimizer makes its state in ``__init__`` only, so its
    step raised a bare ``KeyError: 'step'`` (probe p234). Three steps give Pyro's ``SVI`` losses and weights, from the
    same seeds; and a misspelt per-parameter key for those parameters is refused, as Pyro refuses it."""
    from pyro.infer.autoguide import AutoNormal

    from pyro_dgm.losses import PyroELBO

    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    pz = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="pz")

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.dec = torch.nn.Linear(2, 3)

        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loc": self.dec(z), "scale": torch.ones(3)}

    results = []
    for which in ("svi", "model"):
        torch.manual_seed(0)
        p = Q()
        joint = p * pz
        pyro.clear_param_store()
        pyro.set_rng_seed(1)
        opt = pyro.optim.AdagradRMSProp({"eta": 0.1})
        if which == "svi":
            svi = SVI(joint.model, AutoNormal(joint.model), opt, Trace_ELBO())
            losses = [svi.step(x=x) for _ in range(3)]
        else:
            model = Model(PyroELBO(joint.model, AutoNormal(joint.model), input_var=["x"]), distributions=[p],
                          optimizer=opt)
            losses = [float(model.train({"x": x})) for _ in range(3)]
        results.append((losses, p.dec.weight.detach().clone()))
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-6)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-6, atol=1e-7)

    pyro.clear_param_store()
    p = Q()
    joint = p * pz
    model = Model(PyroELBO(joint.model, AutoNormal(joint.model), input_var=["x"]), distributions=[p],
                  optimizer=pyro.optim.Adam(lambda name: {"lr": 0.01, **({"momentum_typo": 0.9} if name.startswith(
                      "AutoNormal") else {})}))  # (the autoguide's, adopted at the first step)
    with pytest.raises(TypeError, match=r"'momentum_typo', which Adam does not take"):
        model.train({"x": x})
    pyro.clear_param_store()


def _shared_trunk_factors() -> tuple[torch.nn.Linear, Normal, Normal]:
    """``(trunk, py(y|x), px(x|z))``: two factors whose networks are one ``Linear`` trunk."""
    torch.manual_seed(0)
    trunk = torch.nn.Linear(2, 2)

    class PYX(Normal):
        def __init__(self) -> None:
            super().__init__(var=["y"], cond_var=["x"], name="py")
            self.t = trunk

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loc": self.t(x), "scale": torch.ones(2)}

    class PXZ(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="px")
            self.t = trunk

        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loc": self.t(z), "scale": torch.ones(2)}

    return trunk, PYX(), PXZ()


def _shared_trunk_twin(order: str) -> tuple[Any, ...]:
    """A loss over distributions sharing one trunk, trained 3 steps by ``Model`` and by its twin ``SVI(None, None,
    optimizer, loss)``, with learning rates chosen by module name; the names each was called with, and the
    trunk's weights."""
    trunk, py, px = _shared_trunk_factors()
    if order == "product":
        dists: list[Any] = [py * px * Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="pz")]
        loss = -LogProb(dists[0]).sum()
    else:
        loss = -(LogProb(px) + LogProb(py)).sum()
        dists = [px, py] if order == "loss order" else [py, px]
    g = torch.Generator().manual_seed(0)
    data = {k: torch.randn(5, 2, generator=g) for k in "xyz"}
    calls: list[tuple[str, str]] = []

    def rate(module_name: str, param_name: str) -> dict[str, float]:
        calls.append((module_name, param_name))
        return {"lr": 0.1 if module_name.startswith("px") else 0.001}

    start = {k: v.clone() for k, v in trunk.state_dict().items()}
    pyro.clear_param_store()
    model = Model(loss, distributions=dists, optimizer=pyro.optim.Adam(rate))
    for _ in range(3):
        model.train(data)
    ours, ours_calls = trunk.weight.detach().clone(), sorted(set(calls))
    trunk.load_state_dict(start)
    trunk.zero_grad(set_to_none=True)
    pyro.clear_param_store()
    calls.clear()
    svi = SVI(None, None, pyro.optim.Adam(rate), loss)
    for _ in range(3):
        svi.step(data)
    pyro.clear_param_store()
    return ours_calls, sorted(set(calls)), ours, trunk.weight.detach().clone()


@pytest.mark.parametrize("order", ["product", "loss order", "reversed list"])
def test_a_shared_network_is_named_as_svi_with_the_same_loss_names_it(order: str) -> None:
    """A trunk shared by two factors of a product, or by two distributions of the loss: ``SVI(None, None, opt,
    loss)``, the ``Model``'s twin, names it after the last distribution the loss registers (a product's factors in
    the order they were multiplied), and so does the ``Model``, whatever the order of ``distributions=[...]``. One
    version of the fix named it after the first in that list (the numbers changed with the list's order), the next
    after the last in the product's drawing order, which is ``SVI(d.model)``'s and not the loss's (probes p236,
    p238). Three steps give the twin's weights."""
    ours_calls, svi_calls, ours, theirs = _shared_trunk_twin(order)
    assert ours_calls == svi_calls
    assert {m for m, _ in ours_calls} == ({"px(x|z)"} if order == "product" else {"py(y|x)"})
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)


def test_clip_args_are_checked_as_pyros_clipping_takes_them() -> None:
    """A 0-d tensor as a clipping value is its number (a callable giving every parameter
    ``{"clip_norm": torch.tensor(0.01)}`` was refused as "differing" clippings; the dict form took it); a misspelt
    key (``"clipnorm"``), which Pyro's clipping refuses, was ignored, and ``clip_norm=0``, which Pyro applies (every
    gradient to 0), meant no clipping here: both are refused by name (probe p236)."""
    weights = _clipped_weights([{"clip_norm": 0.01}, lambda m, n: {"clip_norm": torch.tensor(0.01)}], 2)
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)
    with pytest.raises(TypeError, match=r"clip_args.* hold 'clipnorm'"):
        Model(-LogProb(Dec()).sum(), distributions=[Dec()], optimizer=pyro.optim.SGD({"lr": 0.05}, {"clipnorm": 1.0}))
    with pytest.raises(ValueError, match=r"clip_norm=0.0 clips every gradient to 0 under Pyro"):
        Model(-LogProb(Dec()).sum(), distributions=[Dec()], optimizer=pyro.optim.SGD({"lr": 0.05}, {"clip_norm": 0}))


def _autoguide_model(optimizer: Any, **kwargs: Any) -> Model:
    """A ``Model`` of a ``PyroELBO`` term with an ``AutoNormal`` over ``p(x|z) p(z)``, training ``p``'s decoder: the
    autoguide's parameters are adopted at the first step."""
    from pyro.infer.autoguide import AutoNormal

    from pyro_dgm.losses import PyroELBO

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.dec = torch.nn.Linear(2, 3)

        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loc": self.dec(z), "scale": torch.ones(3)}

    p = Q()
    joint = p * Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="pz")
    return Model(PyroELBO(joint.model, AutoNormal(joint.model), input_var=["x"]), distributions=[p],
                 optimizer=optimizer, **kwargs)


def test_a_callable_clip_args_that_clips_an_autoguides_parameters_apart_is_refused() -> None:
    """``clip_args`` clipping only the ``AutoNormal`` parameters a ``Model`` adopts at its first step: it was never
    called for them, so they trained unclipped where ``SVI`` clips them (WRONG, probe p236). A model clips every
    parameter alike: refused by name at that step."""
    pyro.clear_param_store()
    model = _autoguide_model(pyro.optim.SGD({"lr": 0.05}, lambda m, n: {"clip_norm": 0.001} if m.startswith(
                      "AutoNormal") else {}))
    with pytest.raises(ValueError, match=r"give the parameters of Pyro's param store \(AutoNormal"):
        model.train({"x": torch.randn(6, 3)})
    pyro.clear_param_store()


def test_clip_args_of_none_mean_no_clipping_as_in_pyro() -> None:
    """``clip_args={"clip_norm": None}`` (or a callable giving ``{"clip_value": None}``): Pyro's clipping skips a
    ``None``; the check of the last round refused it as "must be a number" (probe p238). Two steps give the
    weights of no clipping."""
    weights = _clipped_weights([None, {"clip_norm": None}, lambda m, n: {"clip_value": None}], 2)
    for w in weights[1:]:
        torch.testing.assert_close(w, weights[0], rtol=0, atol=0)


def test_a_callable_clip_args_alike_for_every_parameter_with_a_models_own_clipping_is_taken() -> None:
    """``clip_args=lambda m, n: {}`` with ``clip_grad_norm=5.0`` and an autoguide whose parameters the model adopts
    at its first step: the callable gives those parameters what it gave the distributions', so it is taken (the
    check compared with the model's clipping, which ``clip_grad_norm=`` had set, and refused; probe p238)."""
    pyro.clear_param_store()
    model = _autoguide_model(pyro.optim.SGD({"lr": 0.05}, lambda m, n: {}), clip_grad_norm=5.0)
    assert torch.isfinite(model.train({"x": torch.randn(6, 3)}))
    assert model.clip_norm == 5.0
    pyro.clear_param_store()


def test_a_pyro_elbo_terms_shared_network_is_named_as_its_model_registers_it() -> None:
    """``PyroELBO(joint.model, guide)`` over ``py(y|x) * px(x|z) * pz(z)`` sharing a trunk: ``joint.model``
    registers the factors in the order they are drawn, so Pyro's ``SVI`` (with ``joint.model``, or with the term as
    its loss) names the trunk after ``py(y|x)``; the last fix read only the loss's own distributions, which do not
    reach a Pyro-side term's model, and named it after ``px(x|z)`` (probe p239). Three steps give ``SVI``'s
    weights."""
    from pyro_dgm.losses import PyroELBO

    trunk, py, px = _shared_trunk_factors()
    joint = py * px * Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="pz")
    g = torch.Generator().manual_seed(0)
    data = {k: torch.randn(5, 2, generator=g) for k in "xyz"}
    calls: list[tuple[str, str]] = []

    def rate(module_name: str, param_name: str) -> dict[str, float]:
        calls.append((module_name, param_name))
        return {"lr": 0.1 if module_name.startswith("py") else 0.01}

    def guide(**kw: Any) -> None:
        pass

    start = {k: v.clone() for k, v in trunk.state_dict().items()}
    pyro.clear_param_store()
    model = Model(PyroELBO(joint.model, guide, input_var=["x", "y", "z"]), distributions=[joint],
                  optimizer=pyro.optim.Adam(rate))
    for _ in range(3):
        model.train(data)
    ours, ours_calls = trunk.weight.detach().clone(), sorted(set(calls))
    trunk.load_state_dict(start)
    trunk.zero_grad(set_to_none=True)
    pyro.clear_param_store()
    calls.clear()
    svi = SVI(joint.model, guide, pyro.optim.Adam(rate), Trace_ELBO())
    for _ in range(3):
        svi.step(**data)
    assert ours_calls == sorted(set(calls)) == [("py(y|x)", "t.bias"), ("py(y|x)", "t.weight")]
    torch.testing.assert_close(ours, trunk.weight.detach(), rtol=1e-6, atol=1e-7)
    pyro.clear_param_store()


def test_a_parameter_pyro_creates_at_a_later_step_must_get_the_first_ones_clipping() -> None:
    """A model whose only parameters are Pyro's (its optimizer built at the first step) and a callable
    ``clip_args`` that clips a parameter created at the second step differently: ``SVI`` clips each by its own; a
    model clips every parameter alike, so it refuses by name (the clipping taken at the first step was not kept,
    and the later parameter trained with the first one's clipping, silently; probe p239)."""
    import pyro.distributions as dist

    from pyro_dgm.losses import PyroELBO

    def model_fn(x: torch.Tensor) -> None:
        loc = pyro.param("loc", torch.zeros(()))
        if x.shape[0] > 3:
            loc = loc + pyro.param("extra", torch.zeros(()))
        with pyro.plate("n", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    def guide(x: torch.Tensor) -> None:
        pass

    pyro.clear_param_store()
    model = Model(PyroELBO(model_fn, guide, input_var=["x"]), optimizer=pyro.optim.SGD(
        {"lr": 0.1}, lambda m, n: {"clip_norm": 100.0} if n == "loc" else {"clip_norm": 0.01}))
    model.train({"x": torch.full((2,), 5.0)})
    with pytest.raises(ValueError, match=r"param store \(extra\) the clipping \{'clip_norm': 0.01\}"):
        model.train({"x": torch.full((6,), 5.0)})
    pyro.clear_param_store()
