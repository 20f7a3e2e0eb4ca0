"""Thirty-first Pyro round (probe p374): the networks a ``PyroELBO`` term's guide registers with ``pyro.module``,
whose buffers (a batch norm's running statistics) the step cannot list before it runs them. A step that fails puts
them back as it puts back pyro_dgm's networks' (as in a run that never met the failure), and a checkpoint holds
them, so that a run resumed from it goes on as the uninterrupted one."""
from __future__ import annotations

import io
from typing import Any

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_dgm.distributions import Normal
from pyro_dgm.losses import LogProb, PyroELBO
from pyro_dgm.models import Model, NonFiniteLossError

G = torch.Generator().manual_seed(5)
Y, X = torch.randn(5, 3, generator=G), torch.randn(5, 1, generator=G)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin, self.bn, self.out = nn.Linear(3, 4, bias=False), nn.BatchNorm1d(4), nn.Linear(4, 1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.bn(self.lin(y)))).squeeze(-1)


class P(Normal):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["y"], name="p")
        self.net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))

    def forward(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": self.net(y), "scale": torch.ones(1)}


def program(fail: dict[str, bool]) -> tuple[Model, Net, P]:
    """A pyro_dgm term and a Pyro model/guide pair whose guide registers ``Net`` (with a batch norm) by
    ``pyro.module``; the model raises after the guide ran while ``fail["now"]``."""
    torch.manual_seed(0)
    pyro.clear_param_store()
    net = Net()

    def model(y: torch.Tensor) -> None:
        w = pyro.sample("w", dist.Normal(torch.zeros(1), 1.).to_event(1))
        if fail["now"]:
            raise RuntimeError("the model failed after the guide ran")
        with pyro.plate("d", y.shape[0]):
            pyro.sample("y", dist.Normal(w.sum(), 1.), obs=y[:, 0])

    def guide(y: torch.Tensor) -> None:
        pyro.module("gnet", net)
        pyro.sample("w", dist.Normal(net(y).mean().reshape(1), 1.).to_event(1))

    p = P()
    loss = (-LogProb(p)).mean() + PyroELBO(model, guide, input_var=["y"])
    return Model(loss, distributions=[p], optimizer=torch.optim.Adam, optimizer_params={"lr": 1e-2}), net, p


def state(net: Net, p: P) -> dict[str, torch.Tensor]:
    return {**{f"net.{k}": v.clone() for k, v in net.state_dict().items()},
            **{f"p.{k}": v.clone() for k, v in p.state_dict().items()}}


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for k, v in a.items():
        torch.testing.assert_close(b[k], v, rtol=0, atol=0, msg=k)


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_failed_step_puts_back_the_buffers_of_a_network_the_guide_registers(error: type) -> None:
    """Two steps, a third whose model raises after the guide ran (the guide's batch norm updated: before,
    ``num_batches_tracked`` 2 -> 3 and ``running_mean`` moved by up to 0.098, while pyro_dgm's network was put
    back), then two more: every weight and buffer as in the run of four steps that never met the failure."""
    fail = {"now": False}
    model, net, p = program(fail)
    for _ in range(2):
        model.train({"x": X, "y": Y})
    before = state(net, p)
    fail["now"] = True
    if error is KeyboardInterrupt:
        handle = net.bn.register_forward_hook(_interrupt)  # (inside the guide's network, after its batch norm ran)
    with pytest.raises(error):
        model.train({"x": X, "y": 2 + Y})
    if error is KeyboardInterrupt:
        handle.remove()
    fail["now"] = False
    assert_same_state(before, state(net, p))
    torch.manual_seed(7)
    for _ in range(2):
        model.train({"x": X, "y": Y})

    clean, clean_net, clean_p = program({"now": False})
    for _ in range(2):
        clean.train({"x": X, "y": Y})
    torch.manual_seed(7)
    for _ in range(2):
        clean.train({"x": X, "y": Y})
    assert_same_state(state(clean_net, clean_p), state(net, p))


def test_a_checkpoint_holds_the_buffers_of_a_network_the_guide_registers() -> None:
    """Saved after two steps and loaded with ``resume=True`` into a new program (which takes one step first, as
    ``load`` asks): the guide's batch norm is the saved one (before: ``num_batches_tracked`` 1 where 2 was saved,
    ``running_mean`` off by up to 0.069), and two more steps give the uninterrupted run's weights and buffers."""
    model, net, p = program({"now": False})
    for _ in range(2):
        model.train({"x": X, "y": Y})
    buf = io.BytesIO()
    model.save(buf)
    for _ in range(2):
        model.train({"x": X, "y": Y})
    expected = state(net, p)

    resumed, net2, p2 = program({"now": False})
    resumed.train({"x": X, "y": 1 + Y})
    buf.seek(0)
    resumed.load(buf, resume=True)
    assert int(net2.bn.num_batches_tracked) == 2
    for _ in range(2):
        resumed.train({"x": X, "y": Y})
    assert_same_state(expected, state(net2, p2))


def test_a_checkpoint_with_the_buffers_of_other_networks_is_refused_naming_them() -> None:
    """A checkpoint whose Pyro-side network holds other buffers than this model's (a buffer this guide's batch
    norm has besides, or one of another shape) is refused before anything changes, naming the buffers."""
    model, _, _ = program({"now": False})
    model.train({"x": X, "y": Y})
    buf = io.BytesIO()
    model.save(buf)
    names = r"holds the buffers \['num_batches_tracked', 'running_mean', 'running_var'\], this model's \['extra', "
    shape = r"buffer 'running_mean' of the Pyro-side terms' network 'gnet\$\$\$bn' \(BatchNorm1d\) has shape \(4,\) in "
    for extra, words in ((torch.zeros(2), names), (None, shape + r"the checkpoint but \(1,\)")):
        other, net2, p2 = program({"now": False})
        if extra is not None:
            net2.bn.register_buffer("extra", extra)
        other.train({"x": X, "y": Y})
        if extra is None:
            net2.bn.running_mean = torch.zeros(1)
        before = state(net2, p2)
        buf.seek(0)
        with pytest.raises(ValueError, match=words):
            other.load(buf, resume=True)
        assert_same_state(before, state(net2, p2))


def decoder_model(dec: nn.Module, z_dim: int) -> Any:
    """The model of the VAEs below: ``z ~ N(0, I)`` of ``z_dim`` per row, ``x ~ N(dec(z), I)``, ``dec`` registered
    by ``pyro.module``."""
    def model(x: torch.Tensor) -> None:
        pyro.module("dec", dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], z_dim), 1.).to_event(1))
            pyro.sample("x", dist.Normal(dec(z), 1.).to_event(1), obs=x)

    return model


def _train_each(model: Model, which: dict[str, str], x: torch.Tensor) -> None:
    """One training step with each of the guide's two networks (``which["k"]`` = "A", then "B")."""
    for k in "AB":
        which["k"] = k
        model.train({"x": x})


def _two_encoders(script: bool = False, affine: bool = True) -> tuple[Model, dict[str, nn.Module], dict[str, str]]:
    """A VAE whose guide registers two encoders (each with a batch norm, with weights or without) and runs the one
    ``which["k"]`` names."""
    torch.manual_seed(0)
    pyro.clear_param_store()
    nets = {k: nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4, affine=affine)) for k in "AB"}
    if script:
        nets = {k: torch.jit.script(v) for k, v in nets.items()}
    dec = nn.Linear(2, 5)
    which = {"k": "A"}

    model = decoder_model(dec, 2)

    def guide(x: torch.Tensor) -> None:
        pyro.module("encA", nets["A"])
        pyro.module("encB", nets["B"])
        h = nets[which["k"]](x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(h[:, :2], h[:, 2:].exp()).to_event(1))

    return Model(PyroELBO(model, guide), optimizer=torch.optim.Adam, optimizer_params={"lr": 1e-2}), nets, which


DATA = [torch.randn(6, 5, generator=torch.Generator().manual_seed(i)) for i in range(6)]


def _bn(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "tracked" in k}


@pytest.mark.parametrize("affine", [True, False])
def test_a_checkpoint_matches_the_networks_by_their_names_not_the_order_a_run_found_them(affine: bool) -> None:
    """Encoder A runs at the saving program's first step and B at its second; the loading program's steps (which
    ``load`` asks for) run B, then A: the batch norms were matched by the order found, so A's saved statistics
    went into B and B's into A, silently (p376: A's running mean [-0.0813, ...] after two resumed steps where the
    uninterrupted run has [0.0471, ...]; p377: the same for batch norms without weights). They are matched by
    their place under the network ``pyro.module`` registered (``"encA$$$1"``): the uninterrupted run's."""
    model, nets, which = _two_encoders(affine=affine)
    buf = io.BytesIO()
    for i, x in enumerate(DATA):
        which["k"] = "AB"[i % 2]
        torch.manual_seed(100 + i)
        model.train({"x": x})
        if i == 3:
            model.save(buf)
    resumed, nets2, which2 = _two_encoders(affine=affine)
    for k in "BA":
        which2["k"] = k
        resumed.train({"x": DATA[0]})
    buf.seek(0)
    resumed.load(buf, resume=True)
    for i in (4, 5):
        which2["k"] = "AB"[i % 2]
        torch.manual_seed(100 + i)
        resumed.train({"x": DATA[i]})
    for k in "AB":
        assert_same_state({f"{k}.{n}": v for n, v in _bn(nets[k]).items()},
                          {f"{k}.{n}": v for n, v in _bn(nets2[k]).items()})


def test_a_scripted_encoders_batch_norm_is_put_back_by_a_failed_step() -> None:
    """A ``torch.jit.script`` encoder: its batch norm runs inside TorchScript, where no forward hook fires, so a
    failed step (a NaN batch, refused after the encoder ran, or a NaN loss without validation) kept its update
    (``num_batches_tracked`` 1 -> 2); the scripted network's modules are noted when it is called, and put back as
    an eager one's."""
    model, nets, which = _two_encoders(script=True)
    model.train({"x": DATA[0]})
    before = _bn(nets["A"])
    with pytest.raises((ValueError, NonFiniteLossError)):  # (refused by validation, else a NaN loss)
        model.train({"x": torch.full((6, 5), float("nan"))})
    assert_same_state(before, _bn(nets["A"]))


def test_a_network_built_at_each_call_is_not_kept_alive_by_the_model() -> None:
    """A guide that builds a batch norm at each call: the model kept every one (3000 alive after 3000 steps, a
    checkpoint of 2.4 MB that no new program could load); it keeps them weakly, as plain SVI keeps none."""
    import gc
    import weakref

    made: list[weakref.ref] = []
    dec = nn.Linear(2, 5)

    model = decoder_model(dec, 2)

    def guide(x: torch.Tensor) -> None:
        bn = nn.BatchNorm1d(5, affine=False)
        made.append(weakref.ref(bn))
        h = bn(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(h[:, :2], 1.).to_event(1))

    m = Model(PyroELBO(model, guide), optimizer=torch.optim.Adam, optimizer_params={"lr": 1e-2})
    for i in range(20):
        m.train({"x": DATA[i % 6]})
    gc.collect()
    assert sum(r() is not None for r in made) == 0
    buf = io.BytesIO()
    m.save(buf)
    assert "pyro_modules" not in torch.load(io.BytesIO(buf.getvalue()), weights_only=True)


def test_a_scripted_batch_norm_registered_alone_is_put_back_and_saved() -> None:
    """``torch.jit.script(nn.BatchNorm1d(4))`` as the guide's network: the module called is the batch norm itself,
    whose own buffers were skipped (p377: ``running_mean`` NaN after a refused NaN batch, and no checkpoint entry)."""
    torch.manual_seed(0)
    pyro.clear_param_store()
    bn = torch.jit.script(nn.BatchNorm1d(5))
    dec = nn.Linear(5, 5)

    model = decoder_model(dec, 5)

    def guide(x: torch.Tensor) -> None:
        pyro.module("bn", bn)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(bn(x), 1.).to_event(1))

    model_ = Model(PyroELBO(model, guide), optimizer=torch.optim.Adam, optimizer_params={"lr": 1e-2})
    model_.train({"x": DATA[0]})
    before = _bn(bn)
    with pytest.raises((ValueError, NonFiniteLossError)):
        model_.train({"x": torch.full((6, 5), float("nan"))})
    assert_same_state(before, _bn(bn))
    buf = io.BytesIO()
    model_.save(buf)
    assert list(torch.load(io.BytesIO(buf.getvalue()), weights_only=True)["pyro_modules"]) == ["bn$$$"]


def test_one_network_registered_under_two_names_is_stepped_once_as_by_svi() -> None:
    """``pyro.module("first", enc)`` and ``pyro.module("second", enc)``: each tensor joined the optimizer under both
    names and was stepped twice (p377: weight row 0 [0.7839, ...] where SVI and w - 0.1 grad give [0.3903, ...]);
    once now, as plain Pyro's SVI steps it."""
    def build() -> tuple[Any, Any, nn.Module]:
        torch.manual_seed(0)
        pyro.clear_param_store()
        enc, dec = nn.Linear(5, 2), nn.Linear(2, 5)

        model = decoder_model(dec, 2)

        def guide(x: torch.Tensor) -> None:
            pyro.module("first", enc)
            pyro.module("second", enc)
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", dist.Normal(enc(x), 1.).to_event(1))

        return model, guide, enc

    model, guide, enc = build()
    m = Model(PyroELBO(model, guide), optimizer=torch.optim.SGD, optimizer_params={"lr": 0.1})
    torch.manual_seed(3)
    m.train({"x": DATA[0]})
    held = [id(p) for g in m.optimizer.param_groups for p in g["params"]]
    assert len(held) == len(set(held)) == 4  # (enc's and dec's weight and bias, each once)
    model2, guide2, enc2 = build()
    svi = pyro.infer.SVI(model2, guide2, pyro.optim.SGD({"lr": 0.1}), pyro.infer.Trace_ELBO())
    torch.manual_seed(3)
    svi.step(DATA[0])
    torch.testing.assert_close(enc.weight, enc2.weight, rtol=0, atol=1e-7)


def test_a_checkpoint_without_these_buffers_or_run_before_every_network_ran_is_said_so() -> None:
    """A checkpoint written before these buffers were saved loads with a warning that they stay as they are
    (p377: silently); one that holds a network this run has not run yet is refused, saying which and what to do
    (p377: the message named both lists only)."""
    model, nets, which = _two_encoders()
    _train_each(model, which, DATA[0])
    buf = io.BytesIO()
    model.save(buf)
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    del state["pyro_modules"]
    old = io.BytesIO()
    torch.save(state, old)
    other, _, which2 = _two_encoders()
    _train_each(other, which2, DATA[1])
    old.seek(0)
    with pytest.warns(UserWarning, match=r"holds no buffers of the networks .*'encA\$\$\$1', 'encB\$\$\$1'"):
        other.load(old, resume=True)
    partial, _, which3 = _two_encoders()
    partial.train({"x": DATA[1]})  # (runs A only)
    buf.seek(0)
    with pytest.raises(ValueError, match=r"has not run \['encB\$\$\$1'\] yet: take training steps that run each"):
        partial.load(buf, resume=True)


def test_batch_norms_outside_any_registered_network_are_matched_by_order_with_a_warning() -> None:
    """Two batch norms without weights that the guide calls outside any network ``pyro.module`` registered have
    no name a new program could find them by: matched by the order found, with a warning that says so (p377:
    silently swapped when the loading run found them in another order)."""
    def build() -> tuple[Model, dict[str, nn.Module], dict[str, str]]:
        torch.manual_seed(0)
        pyro.clear_param_store()
        lin, dec = nn.Linear(5, 4), nn.Linear(2, 5)
        bns = {k: nn.BatchNorm1d(4, affine=False) for k in "AB"}
        which = {"k": "A"}

        model = decoder_model(dec, 2)

        def guide(x: torch.Tensor) -> None:
            pyro.module("lin", lin)
            h = bns[which["k"]](lin(x))
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", dist.Normal(h[:, :2], h[:, 2:].exp()).to_event(1))

        return Model(PyroELBO(model, guide), optimizer=torch.optim.Adam, optimizer_params={"lr": 1e-2}), bns, which

    model, bns, which = build()
    _train_each(model, which, DATA[0])
    buf = io.BytesIO()
    model.save(buf)
    other, bns2, which2 = build()
    _train_each(other, which2, DATA[1])
    buf.seek(0)
    with pytest.warns(UserWarning, match="matches them by the order the runs found them in"):
        other.load(buf, resume=True)
    for k in "AB":  # (found in the saving run's order here: each its own)
        assert_same_state(_bn(bns[k]), _bn(bns2[k]))


def test_a_batch_norm_two_registered_networks_share_has_one_name_whatever_order_they_run_in() -> None:
    """One batch norm (without weights) inside two networks of one size, ``e1`` and ``e2``, each registered by
    ``pyro.module``: the name came from the one called first, so a program calling ``e2`` first could not load the
    checkpoint of one calling ``e1`` first (p380: ``['e1$$$1']`` against ``['e2$$$1']``); it is the first name of
    the two now, and the saved statistics are restored."""
    def build(order: str) -> tuple[Model, dict[str, nn.Module]]:
        torch.manual_seed(0)
        pyro.clear_param_store()
        nets = {k: nn.Sequential(nn.Linear(5, 5), nn.BatchNorm1d(5, affine=False), nn.Linear(5, 2)) for k in "12"}
        nets["2"][1] = nets["1"][1]
        model = decoder_model(nn.Linear(2, 5), 2)

        def guide(x: torch.Tensor) -> None:
            for k in "12":
                pyro.module(f"e{k}", nets[k])
            h = {k: nets[k](x) for k in order}
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", dist.Normal(h["1"], h["2"].exp()).to_event(1))

        return Model(PyroELBO(model, guide), optimizer=torch.optim.Adam, optimizer_params={"lr": 0.05}), nets

    first, nets = build("12")
    for i in range(3):
        first.train({"x": DATA[i] * (1 + i)})
    buf = io.BytesIO()
    first.save(buf)
    second, nets2 = build("21")
    second.train({"x": DATA[5]})
    buf.seek(0)
    second.load(buf, resume=True)
    assert_same_state(_bn(nets["1"]), _bn(nets2["1"]))
