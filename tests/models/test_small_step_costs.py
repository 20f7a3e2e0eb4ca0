"""What this round changed to make small models' steps cheaper (probe p244) keeps their behaviour: a flow's buffer
assigned anew skips torch's registration path only where that path would do nothing more, and ``Model.test``, which
walks its loss's tree once instead of twice, still puts every network the test loss reads in eval mode."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from pyro_dgm.distributions import Normal
from pyro_dgm.flows import BatchNorm1d
from pyro_dgm.losses import ELBO, KullbackLeibler
from pyro_dgm.models import Model


def test_a_flows_statistics_assigned_at_each_step_still_reach_a_users_global_buffer_hook() -> None:
    """torch's global buffer registration hooks see every buffer assignment (``nn.Module.__setattr__`` calls
    ``register_buffer``): a user's hook still sees a flow batch norm's four statistics per forward pass, and what
    it returns is what the flow keeps, as for any module."""
    seen = []

    def hook(module: nn.Module, name: str, tensor: torch.Tensor) -> torch.Tensor:
        seen.append((type(module).__name__, name))
        return tensor.clone()

    bn = BatchNorm1d(3)
    handle = nn.modules.module.register_module_buffer_registration_hook(hook)
    try:
        bn(torch.randn(5, 3))
    finally:
        handle.remove()
    assert sorted(n for _, n in seen) == ["batch_mean", "batch_var", "running_mean", "running_var"]
    assert {c for c, _ in seen} == {"BatchNorm1d"}


@pytest.mark.parametrize("persistent", [True, False])
def test_a_flows_buffer_assigned_anew_keeps_its_persistence_as_torch_keeps_it(persistent: bool) -> None:
    """A buffer registered (non-)persistent and assigned a new tensor stays (non-)persistent: ``state_dict`` lists it
    exactly when it lists a plain module's, and the new tensor is the buffer."""
    bn, plain = BatchNorm1d(2), nn.Module()
    for m in (bn, plain):
        m.register_buffer("extra", torch.zeros(2), persistent=persistent)
        new = torch.ones(2)
        m.extra = new
        assert m.extra is new and m._buffers["extra"] is new
    assert ("extra" in bn.state_dict()) == ("extra" in plain.state_dict()) == persistent


@pytest.mark.parametrize("value", [nn.Parameter(torch.zeros(2)), None, "text", nn.Buffer(torch.zeros(2))])
def test_a_flows_buffer_given_anything_but_a_plain_tensor_goes_through_torch(value: object) -> None:
    """A parameter, ``None``, a non-tensor or an ``nn.Buffer`` assigned to a flow's buffer name is what torch makes
    of it on any module: the same outcome (the error's class, or where the value ends up)."""
    def outcome(m: nn.Module) -> object:
        m.register_buffer("extra", torch.zeros(2))
        try:
            setattr(m, "extra", value)
        except Exception as e:  # noqa: BLE001
            return type(e)
        return ("extra" in m._buffers, "extra" in m._parameters, type(getattr(m, "extra")))

    assert outcome(BatchNorm1d(2)) == outcome(nn.Module())


def test_a_flow_batch_norm_trains_to_the_statistics_of_its_formula() -> None:
    """The running statistics after three training passes follow the flow's update rule exactly (momentum times the
    old, plus one minus momentum times the batch's; the batch variance biased, plus eps), assigned anew each
    time."""
    torch.manual_seed(0)
    bn = BatchNorm1d(3, momentum=0.9)
    mean, var = bn.running_mean.clone(), bn.running_var.clone()
    for _ in range(3):
        x = torch.randn(8, 3)
        bn(x)
        mean = 0.9 * mean + 0.1 * x.mean(0)
        var = 0.9 * var + 0.1 * (x.var(0, unbiased=False) + bn.eps)
    torch.testing.assert_close(bn.running_mean, mean)
    torch.testing.assert_close(bn.running_var, var)


class Enc(Normal):
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.net = nn.Sequential(nn.Linear(4, 4))

    def forward(self, x: torch.Tensor) -> dict:
        h = self.net(x)
        return {"loc": h[:, :2], "scale": nn.functional.softplus(h[:, 2:]) + 1e-3}


def test_model_test_puts_a_layer_added_to_an_untrained_network_in_eval_mode() -> None:
    """``Model.test`` puts the test loss's networks that it does not train in eval mode for the call: a dropout
    layer appended to such a network after a first test is off in the next tests (two tests give the same value),
    and back in training mode after."""
    torch.manual_seed(0)
    q, fixed = Enc(), Enc()  # ``fixed``: read by the test loss, not trained
    prior = Normal(loc=0.0, scale=1.0, var=["z"], features_shape=[2], name="p_{prior}")
    train_loss = KullbackLeibler(q, prior).mean()
    test_loss = (KullbackLeibler(q, prior) + KullbackLeibler(fixed, prior)).mean()
    model = Model(train_loss, test_loss=test_loss, distributions=[q], optimizer=torch.optim.SGD,
                  optimizer_params={"lr": 0.0})
    x = torch.randn(64, 4)
    model.test({"x": x})
    fixed.net.append(nn.Dropout(0.9))
    a, b = model.test({"x": x}), model.test({"x": x})
    assert torch.equal(a, b)
    assert fixed.net[-1].training
    with torch.no_grad():
        fixed.net.eval()
        ref = test_loss.eval({"x": x})
    torch.testing.assert_close(a, ref)


def test_model_test_follows_a_test_loss_replaced_between_tests() -> None:
    """A test loss put in another's place: its networks are the ones put in eval mode."""
    torch.manual_seed(0)
    q, other = Enc(), Enc()
    other.net.append(nn.Dropout(0.9))
    prior = Normal(loc=0.0, scale=1.0, var=["z"], features_shape=[2], name="p_{prior}")
    model = Model(KullbackLeibler(q, prior).mean(), distributions=[q], optimizer=torch.optim.SGD,
                  optimizer_params={"lr": 0.0})
    x = torch.randn(64, 4)
    model.test({"x": x})
    model.test_loss_cls = KullbackLeibler(other, prior).mean()
    assert torch.equal(model.test({"x": x}), model.test({"x": x}))
    assert other.net[-1].training


def test_an_elbo_model_tests_as_before_across_training() -> None:
    """A VAE's test loss between training steps: the value ``loss.eval`` gives under ``no_grad`` with the networks
    in eval mode."""
    torch.manual_seed(0)
    q = Enc()

    class Dec(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.net = nn.Linear(2, 4)

        def forward(self, z: torch.Tensor) -> dict:
            return {"loc": self.net(z), "scale": torch.ones(1)}

    p = Dec()
    prior = Normal(loc=0.0, scale=1.0, var=["z"], features_shape=[2], name="p_{prior}")
    loss = -ELBO(p * prior, q).mean()
    model = Model(loss, distributions=[q, p], optimizer=torch.optim.Adam)
    x = torch.randn(16, 4)
    for _ in range(3):
        model.train({"x": x})
        torch.manual_seed(1)
        got = model.test({"x": x})
        torch.manual_seed(1)
        with torch.no_grad():
            ref = loss.eval({"x": x})
        assert torch.equal(got, ref)


def test_a_flow_subclass_with_its_own_register_buffer_gets_every_assignment() -> None:
    """A subclass of a flow whose ``register_buffer`` changes what it stores (a clamp) is called for a buffer
    assigned anew, as torch calls it for any module (and Pixyz's flows, plain modules, do): a first version of this
    round's shortcut stored the raw tensor (probe p245)."""
    from pyro_dgm.flows import Flow

    calls = []

    class Clamped(Flow):
        def __init__(self) -> None:
            super().__init__(2)
            self.register_buffer("stat", torch.zeros(2))

        def register_buffer(self, name: str, tensor: torch.Tensor | None, persistent: bool = True) -> None:
            calls.append(name)
            super().register_buffer(name, None if tensor is None else tensor.clamp(max=1.0), persistent)

    f = Clamped()
    f.stat = torch.tensor([5.0, -1.0])
    assert calls == ["stat", "stat"]
    assert f.stat.tolist() == [1.0, -1.0]


class Teacher(Normal):
    def __init__(self, p: float = 0.0) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="t")
        self.net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(p))

    def forward(self, x: torch.Tensor) -> dict:
        return {"loc": self.net(x), "scale": torch.ones_like(x)}


def test_model_test_puts_a_layer_inserted_without_registration_in_eval_mode() -> None:
    """``nn.Sequential.insert`` registers nothing: a dropout layer inserted into a network the test loss reads (not
    trained) after a first test is still off in the next tests, which give one value (a first version of this
    round kept the list of networks between tests, keyed on registrations: probe p245)."""
    torch.manual_seed(0)
    q, t = Teacher(), Teacher()
    model = Model(-q.log_prob().mean(), test_loss=(-q.log_prob() - t.log_prob()).mean(), distributions=[q],
                  optimizer=torch.optim.SGD, optimizer_params={"lr": 0.0})
    x, z = torch.randn(8, 4), torch.randn(8, 4)
    model.test({"x": x, "z": z})
    t.net.insert(1, nn.Dropout(0.5))
    values = [model.test({"x": x.clone(), "z": z}) for _ in range(3)]
    assert all(torch.equal(v, values[0]) for v in values)
    assert t.net[1].training


def test_model_test_puts_a_distribution_swapped_into_a_plain_list_in_eval_mode() -> None:
    """A user's ``Loss`` that keeps its distributions in a plain list (as Pixyz users write): one swapped in after a
    first test, with dropout, is in eval mode in the next tests."""
    import sympy

    from pyro_dgm.losses import Loss

    class Teach(Loss):
        def __init__(self, dists: list) -> None:
            super().__init__(["x", "z"])
            self.dists = dists

        @property
        def _symbol(self) -> sympy.Symbol:
            return sympy.Symbol("T")

        def forward(self, x_dict: dict, **kwargs: object) -> tuple:
            return -self.dists[0].get_log_prob(x_dict).mean(), {}

    torch.manual_seed(0)
    q, noisy = Teacher(), Teacher(0.5)  # (made before the first test: making a module registers its layers)
    teach = Teach([Teacher()])
    model = Model(-q.log_prob().mean(), test_loss=teach, distributions=[q], optimizer=torch.optim.SGD,
                  optimizer_params={"lr": 0.0})
    x, z = torch.randn(8, 4), torch.randn(8, 4)
    model.test({"x": x, "z": z})
    teach.dists[0] = noisy
    values = [model.test({"x": x.clone(), "z": z}) for _ in range(3)]
    assert all(torch.equal(v, values[0]) for v in values)


@pytest.mark.parametrize("library", ["wraps, reports the program's own", "wraps", "answers anew each call",
                                     "refuses to be called"])
def test_a_users_signal_handler_is_in_place_after_steps_under_a_library_that_patches_signal(monkeypatch,
                                                                                            library: str) -> None:
    """A library patches ``signal.signal`` (installing a wrapper around each handler) and perhaps
    ``signal.getsignal`` (answering with the program's own handler, or with a new wrapper object at each call), or
    makes both raise. Pixyz never touches the handlers; a training step here defers them at the C level, under any
    such patch: after 60 steps the user's handler (the library's one wrapper around it) is in place, a signal runs it
    once, and Ctrl-C raises ``KeyboardInterrupt``. (This round's first faster read compared C-level handlers with
    what the patched functions answered and never put the user's back, p247; going through the patched
    ``signal.signal`` wrapped it once more at every step, a ``RecursionError`` after a thousand, or left the recorder
    in place, or failed the step, p249.)"""
    import functools
    import os
    import signal
    import time

    original_signal, original_get = signal.signal, signal.getsignal
    shown: dict = {}

    def wrapping_signal(s: int, h: object) -> object:
        if library == "refuses to be called":
            raise RuntimeError("signal handlers are frozen by this library")
        previous = shown.get(s, original_get(s))
        original_signal(s, functools.wraps(h)(lambda n, f, _h=h: _h(n, f)) if callable(h) else h)
        shown[s] = h
        return previous

    def refusing_get(s: int) -> object:
        raise RuntimeError("getsignal disabled by this library")

    before = {s: original_get(s) for s in (signal.SIGINT, signal.SIGUSR1)}
    calls = []

    def interrupt(n: int, f: object) -> None:
        raise KeyboardInterrupt

    def count(n: int, f: object) -> None:
        calls.append(n)

    original_signal(signal.SIGUSR1, count)
    if library != "refuses to be called":
        wrapping_signal(signal.SIGINT, interrupt)
    else:
        original_signal(signal.SIGINT, interrupt)
    monkeypatch.setattr(signal, "signal", wrapping_signal)
    if library == "wraps, reports the program's own":
        monkeypatch.setattr(signal, "getsignal", lambda s: shown.get(s, original_get(s)))
    elif library == "answers anew each call":
        monkeypatch.setattr(signal, "getsignal", lambda s: functools.partial(original_get(s)))
    elif library == "refuses to be called":
        monkeypatch.setattr(signal, "getsignal", refusing_get)
    try:
        p = Teacher()
        model = Model(-p.log_prob().mean(), distributions=[p], optimizer=torch.optim.SGD,
                      optimizer_params={"lr": 0.01})
        x, z = torch.randn(4, 4), torch.randn(4, 4)
        for _ in range(60):
            model.train({"x": x, "z": z})
        in_place = original_get(signal.SIGINT)
        assert in_place is interrupt or in_place.__wrapped__ is interrupt  # (one wrapper, not 61)
        assert original_get(signal.SIGUSR1) is count
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)
        assert calls == [signal.SIGUSR1]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
    finally:
        for s, h in before.items():
            original_signal(s, h)


def test_a_library_set_up_during_a_step_that_chains_to_the_handler_in_place_reaches_the_users() -> None:
    """A library set up lazily in the first step (an optimizer hook) installs a handler that chains to the one it
    finds in place, which is the step's recorder. After the step a signal goes to the library, then to the user's
    handler, once, as under Pixyz (which never swaps handlers); later steps replay nothing. (The recorder, called
    after its step, recorded the signal: the user's handler never ran, and each later step raised it again into the
    library's handler, Ctrl-C included; p250.)"""
    import os
    import signal
    import time

    log: list[str] = []
    before = signal.getsignal(signal.SIGUSR1)

    def user(n: int, f: object) -> None:
        log.append("user")

    def set_up_library(*_: object) -> None:
        if log.count("set up"):
            return
        log.append("set up")
        previous = signal.getsignal(signal.SIGUSR1)

        def library(n: int, f: object) -> None:
            log.append("library")
            if callable(previous):
                previous(n, f)

        signal.signal(signal.SIGUSR1, library)

    signal.signal(signal.SIGUSR1, user)
    try:
        p = Teacher()
        model = Model(-p.log_prob().mean(), distributions=[p], optimizer=torch.optim.SGD,
                      optimizer_params={"lr": 0.01})
        handle = model.optimizer.register_step_post_hook(set_up_library)
        x, z = torch.randn(4, 4), torch.randn(4, 4)
        model.train({"x": x, "z": z})
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)
        assert log == ["set up", "library", "user"]
        for _ in range(5):
            model.train({"x": x, "z": z})
        time.sleep(0.05)
        assert log == ["set up", "library", "user"]
        handle.remove()
    finally:
        signal.signal(signal.SIGUSR1, before)


def test_a_library_that_installs_its_handler_once_does_not_chain_to_itself() -> None:
    """A library run at every step (an optimizer hook) installs its handler only where ``signal.getsignal`` does not
    already answer it, chaining to the handler it replaces. During a step the handler in place is the step's
    recorder: it compares equal to the handler it stands for, so the library installs itself once, as under Pixyz,
    and a signal reaches the library, then the user's handler. (It installed itself again at each step, chained to
    a recorder standing for its own handler: a signal then went round until a ``RecursionError``, Ctrl-C included,
    p251.)"""
    import os
    import signal
    import time

    log: list[str] = []
    before = signal.getsignal(signal.SIGUSR1)

    class Library:
        installs = 0
        previous: object = None

        def handler(self, n: int, f: object) -> None:
            log.append("library")
            if callable(self.previous):
                self.previous(n, f)

        def ensure(self, *_: object) -> None:
            if signal.getsignal(signal.SIGUSR1) != self.handler:
                Library.installs += 1
                self.previous = signal.signal(signal.SIGUSR1, self.handler)

    library = Library()
    signal.signal(signal.SIGUSR1, lambda n, f: log.append("user"))
    try:
        p = Teacher()
        model = Model(-p.log_prob().mean(), distributions=[p], optimizer=torch.optim.SGD,
                      optimizer_params={"lr": 0.01})
        handle = model.optimizer.register_step_post_hook(library.ensure)
        x, z = torch.randn(4, 4), torch.randn(4, 4)
        for _ in range(3):
            model.train({"x": x, "z": z})
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)
        assert Library.installs == 1
        assert log == ["library", "user"]
        handle.remove()
    finally:
        signal.signal(signal.SIGUSR1, before)
