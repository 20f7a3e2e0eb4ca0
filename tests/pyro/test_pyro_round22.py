"""Pyro round 22 (probe p202): Pyro users' training scripts. Two renamed encoders of one class in one guide collided
in Pyro's param store, and a renaming's ``pyro_name`` was reported and settable but not used; a store saved from a
model whose one network two distributions share could not be trained on after loading (torch's in-place error).
Each is compared with its plain-Pyro twin (``pyro.module`` under the same names)."""
from __future__ import annotations

import copy
import math
from typing import Any

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO
from torch import nn

from pyro_dgm.distributions import Bernoulli, Normal


class _Encoder(Normal):
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.net = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> dict:
        loc, s = self.net(x).chunk(2, -1)
        return {"loc": loc, "scale": F.softplus(s) + 1e-3}


def test_two_renamed_encoders_of_one_class_take_the_names_set_on_the_renamings() -> None:
    """Both inner encoders are named ``q(z|x)``: the guide raised, asking to set ``pyro_name``, which on the
    renamings changed nothing. A renaming's ``pyro_name`` is now its networks' (the renamed distribution's): the
    store holds the plain-Pyro twin's names, and an SVI step gives the twin's loss."""
    torch.manual_seed(0)
    e1, e2 = _Encoder(), _Encoder()
    q1, q2 = e1.replace_var(z="z1"), e2.replace_var(z="z2")
    q1.pyro_name, q2.pyro_name = "enc1", "enc2"
    assert (q1.pyro_name, e1.pyro_name) == ("enc1", "enc1")
    x = torch.rand(5, 6, generator=torch.Generator().manual_seed(1))

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", len(x)):
            for name in ("z1", "z2"):
                pyro.sample(name, dist.Normal(torch.zeros(len(x), 2), 1.).to_event(1))

    def plain_guide(x: torch.Tensor) -> None:
        pyro.module("enc1", e1, update_module_params=True)
        pyro.module("enc2", e2, update_module_params=True)
        with pyro.plate("data", len(x)):
            for name, e in (("z1", e1), ("z2", e2)):
                loc, s = e.net(x).chunk(2, -1)
                pyro.sample(name, dist.Normal(loc, F.softplus(s) + 1e-3).to_event(1))

    losses, keys = [], []
    for guide in ((q1 * q2).guide, plain_guide):
        pyro.clear_param_store()
        svi = SVI(model, guide, pyro.optim.SGD({"lr": 0.0}), Trace_ELBO())
        torch.manual_seed(2)
        losses.append(svi.step(x=x))
        keys.append(sorted(pyro.get_param_store().keys()))
    assert keys[0] == ["enc1$$$net.bias", "enc1$$$net.weight", "enc2$$$net.bias", "enc2$$$net.weight"]
    assert keys[1] == ["enc1$$$net.bias", "enc1$$$net.weight", "enc2$$$net.bias", "enc2$$$net.weight"]
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


def test_a_products_or_marginals_pyro_name_is_refused_naming_its_factors() -> None:
    """A product's networks are registered under its factors' names: setting a product's or a marginal's
    ``pyro_name`` changed nothing; it raises, naming the factors."""
    p = Normal(loc="z", scale=1., var=["x"], cond_var=["z"], name="p")
    joint = p * Normal(loc=0., scale=1., var=["z"], features_shape=[1])
    for d in (joint, joint.marginalize_var("z")):
        with pytest.raises(TypeError, match=r"set pyro_name on the factor .*p\(x\|z\)"):
            d.pyro_name = "decoder"


class _Nets(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4))
        self.dec = nn.Linear(2, 6)


def _ours(nets: _Nets) -> tuple[Any, Any]:
    class Enc(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.nets = nets

        def forward(self, x: torch.Tensor) -> dict:
            loc, s = self.nets.enc(x).chunk(2, -1)
            return {"loc": loc, "scale": F.softplus(s) + 1e-3}

    class Dec(Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.nets = nets

        def forward(self, z: torch.Tensor) -> dict:
            return {"logits": self.nets.dec(z)}

    prior = Normal(loc=0., scale=1., var=["z"], features_shape=[2], name="p_{prior}")
    return (Dec() * prior).model, Enc().guide


def _plain(nets: _Nets) -> tuple[Any, Any]:
    def model(x: torch.Tensor) -> None:
        pyro.module("nets", nets, update_module_params=True)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(len(x), 2), 1.).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=nets.dec(z)).to_event(1), obs=x)

    def guide(x: torch.Tensor) -> None:
        pyro.module("nets", nets, update_module_params=True)
        with pyro.plate("data", len(x)):
            loc, s = nets.enc(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, F.softplus(s) + 1e-3).to_event(1))

    return model, guide


@pytest.mark.parametrize("how", ["save and load", "set_state of a deep copy"])
def test_a_store_of_a_network_shared_by_two_distributions_trains_on_after_loading(how: str, tmp_path: Any) -> None:
    """One module held by the encoder and the decoder is in the store under both distributions' names. Loaded
    into a fresh model, the guide took the stored values under its name, ran, and the model's registration copied
    them again under its own name, after the guide's forward pass had saved the weights for backward: torch's
    in-place error. The resumed step must equal the plain-Pyro twin's."""
    x = (torch.rand(8, 6, generator=torch.Generator().manual_seed(123)) < 0.5).float()
    resumed = []
    for make in (_ours, _plain):
        pyro.clear_param_store()
        torch.manual_seed(0)
        model, guide = make(_Nets())
        kw = {"x": x} if make is _ours else {}
        args = () if make is _ours else (x,)
        SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO()).step(*args, **kw)
        store = pyro.get_param_store()
        saved = copy.deepcopy(store.get_state())
        store.save(tmp_path / "store.pt")
        pyro.clear_param_store()
        torch.manual_seed(1)
        model, guide = make(_Nets())  # (other initial weights: the store's must replace them)
        if how == "save and load":
            store.load(tmp_path / "store.pt")
        else:
            store.set_state(saved)
        torch.manual_seed(2)
        resumed.append(SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO()).step(*args, **kw))
    assert resumed[0] == pytest.approx(resumed[1], rel=1e-6)


def test_a_store_loaded_over_a_network_pyro_module_registered_first_is_loaded() -> None:
    """My first fix of the shared network (probe p203) skipped the copy wherever the store already held the tensor
    under another name: a network that ``pyro.module`` had registered kept its untrained weights, and the loaded
    entry was overwritten with them. The copy is skipped only where the tensor holds the stored value already."""
    from torch.distributions import constraints

    pyro.clear_param_store()
    torch.manual_seed(0)
    q = _Encoder()
    pyro.module("nets", q.net)  # (a mixed Pyro / pyro_dgm script)
    stored = {"q(z|x)$$$net.weight": torch.full((4, 6), 7.0), "q(z|x)$$$net.bias": torch.zeros(4)}
    pyro.get_param_store().set_state({"params": stored, "constraints": {k: constraints.real for k in stored}})
    q.guide(x=torch.rand(3, 6))
    assert torch.equal(q.net.weight, stored["q(z|x)$$$net.weight"])
    assert pyro.get_param_store()["q(z|x)$$$net.weight"] is q.net.weight


def test_a_subclasss_own_pyro_name_names_its_networks_in_the_store() -> None:
    """A class attribute ``pyro_name = "enc1"`` was reported by ``q.pyro_name`` (and now by its renamings) but the
    store used the formula: two such encoders collided, the error naming ``'q(z|x)'``."""

    class Enc1(_Encoder):
        pyro_name = "enc1"

    class Enc2(_Encoder):
        @property
        def pyro_name(self) -> str:  # type: ignore[override]
            return "enc2"

    pyro.clear_param_store()
    q1, q2 = Enc1().replace_var(z="z1"), Enc2().replace_var(z="z2")
    pyro.poutine.trace((q1 * q2).guide).get_trace(x=torch.rand(3, 6))
    assert (q1.pyro_name, q2.pyro_name) == ("enc1", "enc2")
    assert sorted(pyro.get_param_store().keys()) == ["enc1$$$net.bias", "enc1$$$net.weight", "enc2$$$net.bias",
                                                     "enc2$$$net.weight"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_a_store_of_another_dtype_loads_into_a_network_two_distributions_share(dtype: torch.dtype,
                                                                              tmp_path: Any) -> None:
    """The stored values, cast to the network's dtype, were compared with the network's before the cast, so the
    second name copied them again after the guide's forward pass (torch's in-place error, probe p205). The
    resumed step must equal the one resumed from the same store in float32."""
    x = (torch.rand(8, 6, generator=torch.Generator().manual_seed(123)) < 0.5).float()
    pyro.clear_param_store()
    torch.manual_seed(0)
    model, guide = _ours(_Nets())
    SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO()).step(x=x)
    state = copy.deepcopy(pyro.get_param_store().get_state())
    resumed = []
    for cast in (torch.float32, dtype):
        pyro.clear_param_store()
        torch.manual_seed(1)
        model, guide = _ours(_Nets())
        stored = {k: v.detach().to(cast).to(torch.float32) if cast is torch.float32 else v.detach().to(cast)
                  for k, v in state["params"].items()}
        pyro.get_param_store().set_state({"params": stored, "constraints": state["constraints"]})
        torch.manual_seed(2)
        resumed.append(SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO()).step(x=x))
    if dtype is torch.float64:
        assert resumed[1] == pytest.approx(resumed[0], rel=1e-6)
    else:  # (half precision rounds the weights: the step is a step, not the same one)
        assert math.isfinite(resumed[1])


@pytest.mark.parametrize("name", ["enc$$$1", "", 5])
def test_a_subclasss_own_pyro_name_that_is_no_name_is_refused_naming_it(name: Any) -> None:
    """A class attribute skips the setter's check: ``"enc$$$1"`` let two live encoders take each other's entries,
    and ``5`` or ``""`` silently used the formula while ``pyro_name`` reported them (probe p205)."""

    class Named(_Encoder):
        pyro_name = name

    pyro.clear_param_store()
    with pytest.raises(TypeError, match=r"Named q\(z\|x\): pyro_name must be a non-empty string without '\$\$\$'"):
        Named().guide(x=torch.rand(3, 6))


class _Dollars(Normal):
    """p(x$$$|z): a network over a variable whose name holds Pyro's separator (the library warns when building)."""

    def __init__(self) -> None:
        super().__init__(var=["x$$$"], cond_var=["z"], name="p")
        self.fc = nn.Linear(2, 2)

    def forward(self, z: torch.Tensor) -> dict:
        return {"loc": self.fc(z), "scale": torch.ones_like(z)}


def test_a_variable_named_with_dollars_keeps_its_networks_default_store_name() -> None:
    """The default store name is the formula, as ever, even where a variable's name holds ``$$$``; my check of
    store names refused it, blaming a ``pyro_name`` the user never set (probe p208)."""
    pyro.clear_param_store()
    with pytest.warns(UserWarning, match="holds '\\$'"):
        p = _Dollars()
    pyro.poutine.trace(p.model).get_trace(z=torch.zeros(3, 2))
    assert sorted(pyro.get_param_store().keys()) == ["p(x$$$|z)$$$fc.bias", "p(x$$$|z)$$$fc.weight"]


def test_two_live_distributions_of_one_formula_with_dollars_are_refused_as_any_others() -> None:
    """The check of a name's owner cut the store name at its first ``$$$``: two live distributions whose formula
    holds ``$$$`` (a variable named ``x$$$``) silently shared their store names (probe p210)."""

    pyro.clear_param_store()
    with pytest.warns(UserWarning):
        first, second = _Dollars(), _Dollars()
    pyro.poutine.trace(first.model).get_trace(z=torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"already holds 'p\(x\$\$\$\|z\)\$\$\$fc.weight' for another live"):
        pyro.poutine.trace(second.model).get_trace(z=torch.zeros(3, 2))


def test_two_live_distributions_whose_parameter_paths_hold_dollars_are_refused() -> None:
    """A parameter path with ``$$$`` (an ``nn.ModuleDict`` key ``"a$$$b"``) made the owner check cut the store name
    at the wrong ``$$$``: a second live distribution of the same name silently took the first one's entries (probe
    p211). It is refused as any other."""

    class P(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.nets = nn.ModuleDict({"a$$$b": nn.Linear(2, 2)})

        def forward(self, z: torch.Tensor) -> dict:
            return {"loc": self.nets["a$$$b"](z), "scale": torch.ones_like(z)}

    pyro.clear_param_store()
    first, second = P(), P()
    pyro.poutine.trace(first.model).get_trace(z=torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"for another live distribution, P p\(x\|z\), with the same pyro_name"):
        pyro.poutine.trace(second.model).get_trace(z=torch.zeros(3, 2))
