"""Model: one training step, clipping, test mode, printing, optimizers, and the errors for bad input."""
from __future__ import annotations

import copy

import pyro
import pyro.optim
import pytest
import torch
from dgm_model_helpers import Classifier, digits, digits_nets, make_ml, make_vae
from torch import nn

from pyro_dgm.distributions import Normal
from pyro_dgm.losses import KullbackLeibler
from pyro_dgm.utils.compat import get_total_norm
from pyro_dgm.models import ML, VAE, VI, DataParalleledLoss, Model


def _params(model: Model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.distributions.parameters()]


def test_train_equals_manual_eval_backward_step() -> None:
    """Model.train is loss.eval -> zero_grad -> backward -> step (same MC noise, same numbers)."""
    x = digits()[0][:32]
    model = make_vae()
    twin = copy.deepcopy(model)  # same weights, its own optimizer over its own parameters
    twin_opt = torch.optim.Adam(twin.distributions.parameters(), lr=1e-2)
    for step in range(3):
        pyro.set_rng_seed(step)
        loss = model.train({"x": x})
        pyro.set_rng_seed(step)
        twin_opt.zero_grad()
        manual = twin.loss_cls.eval({"x": x})
        manual.backward()
        twin_opt.step()
        assert torch.equal(loss, manual.detach())
        assert not loss.requires_grad
    for a, b in zip(model.distributions.parameters(), twin.distributions.parameters()):
        assert torch.equal(a, b)
    assert model.step == 3


@pytest.mark.parametrize("kind", ["norm", "value"])
def test_clip_grad_bounds_the_gradients(kind: str) -> None:
    x, y = digits()
    big = {"x": x[:64] * 50, "y": y[:64]}  # large inputs give large gradients
    kwargs = {"clip_grad_norm": 0.5} if kind == "norm" else {"clip_grad_value": 0.01}
    model = make_ml(**kwargs)
    free = make_ml()
    free.distributions.load_state_dict(model.distributions.state_dict())
    model.train(big)
    free.train(big)
    grads = [p.grad for p in model.distributions.parameters()]
    free_grads = [p.grad for p in free.distributions.parameters()]
    if kind == "norm":
        assert get_total_norm(free_grads) > 5  # clipping had something to do
        assert get_total_norm(grads) <= 0.5 + 1e-5
    else:
        assert max(float(g.abs().max()) for g in free_grads) > 0.1
        assert max(float(g.abs().max()) for g in grads) <= 0.01 + 1e-7


def test_test_is_no_grad_in_eval_mode_and_leaves_the_trained_networks_in_eval_mode() -> None:
    seen: list[bool] = []

    class Probe(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["y"])
            self.net = nn.Sequential(nn.Linear(1, 1), nn.Dropout(0.5))

        def forward(self, y):  # type: ignore[no-untyped-def]
            seen.append(self.net[1].training)
            return {"loc": self.net(y), "scale": torch.ones_like(y)}

    p = Probe()
    model = Model((-p.log_prob()).mean(), distributions=[p])
    data = {"x": torch.zeros(4, 1), "y": torch.ones(4, 1)}
    p.net[0].train()
    p.net[1].eval()
    loss = model.test(data)
    assert seen == [False] and not loss.requires_grad
    assert not p.net[0].training and not p.net[1].training  # Pixyz: distributions.eval(), left so after test()
    model.train(data)
    assert seen[-1] is True  # train() puts the networks in training mode (Pixyz)


def test_kwargs_reach_the_networks() -> None:
    class Scaled(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["y"])
            self.net = nn.Linear(1, 1)

        def forward(self, y, factor=1.0):  # type: ignore[no-untyped-def]
            return {"loc": factor * self.net(y), "scale": torch.ones_like(y)}

    p = Scaled()
    model = Model((-p.log_prob()).mean(), distributions=[p])
    data = {"x": torch.zeros(4, 1), "y": torch.ones(4, 1)}
    assert not torch.equal(model.test(data), model.test(data, factor=0.0))
    assert torch.allclose(model.test(data, factor=0.0), torch.tensor(0.9189385), atol=1e-6)  # 0.5 log(2 pi)


def test_print_matches_pixyz_layout() -> None:
    model = make_vae()
    text = str(model)
    lines = text.splitlines()
    assert lines[0] == "Distributions (for training):"
    assert lines[1] == "  q(z|x), p(x|z)"
    assert lines[2] == "Loss function:"
    assert lines[3] == "  " + str(model.loss_cls)
    assert lines[4] == "Optimizer:"
    assert lines[5] == "  Adam ("
    assert "lr: 0.01" in text
    net = nn.Linear(2, 2)
    with_net = Model(model.loss_cls, distributions=[*model.distributions, net])
    assert "Deterministic functions (for training):\n  Linear(in_features=2" in str(with_net)


def test_print_latex(capsys: pytest.CaptureFixture[str]) -> None:
    model = make_ml()
    out = model.print_latex()
    text = getattr(out, "data", out)  # IPython's Math object or the printed text
    assert r"\log p(y|x)" in str(text)


def test_pyro_optim_instance_and_factory() -> None:
    x, y = digits()
    data = {"x": x[:64], "y": y[:64]}
    ref = ML(Classifier(), optimizer=torch.optim.Adam, optimizer_params={"lr": 0.05})
    state = ref.distributions.state_dict()
    by_instance = ML(Classifier(), optimizer=pyro.optim.Adam({"lr": 0.05}))
    by_factory = ML(Classifier(), optimizer=pyro.optim.Adam, optimizer_params={"lr": 0.05})
    for m in (by_instance, by_factory):
        assert isinstance(m.optimizer, torch.optim.Adam) and m.optimizer.param_groups[0]["lr"] == 0.05
        m.distributions.load_state_dict(state)
    for _ in range(3):
        losses = [m.train(data) for m in (ref, by_instance, by_factory)]
        assert torch.equal(losses[0], losses[1]) and torch.equal(losses[0], losses[2])
    # pyro.optim's clip_args become the model's clipping; per-parameter arguments become groups
    clipped = ML(Classifier(), optimizer=pyro.optim.SGD({"lr": 0.1}, {"clip_norm": 0.25}))
    assert clipped.clip_norm == 0.25
    per_param = ML(Classifier(), optimizer=pyro.optim.SGD(  # called as Pyro calls it: (module's name, parameter's)
        lambda module_name, param_name: {"lr": 0.5 if param_name.endswith("weight") else 0.0}))
    bias = per_param.distributions[0].net.bias.detach().clone()
    per_param.train(data)
    assert torch.equal(per_param.distributions[0].net.bias, bias)  # lr 0 for the 1-d parameter


def test_a_torch_optimizer_factory_and_clipped_adam() -> None:
    m = make_ml(optimizer=pyro.optim.ClippedAdam)  # a torch.optim.Optimizer subclass living in pyro.optim
    assert type(m.optimizer).__name__ == "ClippedAdam"
    f = make_ml(optimizer=lambda params, lr: torch.optim.SGD(params, lr=lr))
    assert isinstance(f.optimizer, torch.optim.SGD) and f.optimizer.param_groups[0]["lr"] == 0.1


def test_bad_inputs_give_clear_errors() -> None:
    q, p = digits_nets()
    loss = (-p.log_prob().expectation(q)).mean()
    with pytest.raises(TypeError, match=r"distributions\[1\] is a torch.distributions.normal.Normal"):
        Model(loss, distributions=[q, torch.distributions.Normal(0.0, 1.0)])
    with pytest.raises(TypeError, match=r"distributions\[0\] is a builtins.str .*'p'"):
        Model(loss, distributions=["p"])
    with pytest.raises(TypeError, match="distributions must be a list"):
        Model(loss, distributions="pq")
    with pytest.raises(ValueError, match="no parameters to optimize"):
        Model(loss)
    with pytest.raises(ValueError, match="no parameters to optimize"):
        Model(loss, distributions=[Normal(loc=0.0, scale=1.0, var=["x"])])
    with pytest.raises(TypeError, match="loss must be a pyro_dgm Loss.*torch.Tensor"):
        Model(torch.tensor(1.0), distributions=[q])
    with pytest.raises(TypeError, match="test_loss must be a pyro_dgm Loss"):
        Model(loss, test_loss="nll", distributions=[q])
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer class"):
        Model(loss, distributions=[q], optimizer="adam")
    with pytest.raises(ValueError, match="optimizer_params.*cannot be combined with a pyro.optim"):
        Model(loss, distributions=[q], optimizer=pyro.optim.Adam({"lr": 1.0}), optimizer_params={"lr": 2.0})
    with pytest.raises(TypeError, match="regularizer must be a pyro_dgm Loss"):
        VAE(q, p, regularizer="0.5")
    with pytest.raises(TypeError, match="VAE: decoder must be a pyro_dgm Distribution"):
        VAE(q, nn.Linear(2, 2))
    with pytest.raises(TypeError, match="VI: approximate_dist must be a pyro_dgm Distribution"):
        VI(p, None)
    with pytest.raises(TypeError, match="ML: p must be a pyro_dgm Distribution"):
        ML(torch.distributions.Normal(0.0, 1.0))
    with pytest.raises(TypeError, match="DataParalleledLoss: loss must be a pyro_dgm Loss"):
        DataParalleledLoss(p)


def test_ready_made_losses_are_pixyz_objectives() -> None:
    q, p = digits_nets()
    prior = Normal(loc=torch.zeros(4), scale=torch.ones(4), var=["z"], name="p_{prior}")
    x = digits()[0][:16]
    vae = VAE(q, p, regularizer=KullbackLeibler(q, prior))
    pyro.set_rng_seed(1)
    value = vae.test({"x": x})
    pyro.set_rng_seed(1)
    expected = (-p.log_prob().expectation(q) + KullbackLeibler(q, prior)).mean().eval({"x": x})
    assert torch.equal(value, expected)
    plain = VAE(q, p)  # no regularizer: the reconstruction term alone
    assert str(plain.loss_cls) == str((-p.log_prob().expectation(q)).mean())
    vi = VI(p * prior, q)
    assert str(vi.loss_cls).startswith(r"- mean \left(\mathbb{E}_{q(z|x)}")
    assert [d.prob_text for d in vi.distributions] == ["p(x,z)", "q(z|x)"]
    ml = make_ml()
    assert str(ml.loss_cls) == r"mean \left(- \log p(y|x) \right)" and str(ml.nll) == r"- \log p(y|x)"


def test_data_paralleled_loss_trains_like_the_loss() -> None:
    x, y = digits()
    data = {"x": x[:64], "y": y[:64]}
    a = make_ml()
    b = ML(Classifier(), optimizer_params={"lr": 0.1})
    b.distributions.load_state_dict(a.distributions.state_dict())
    b.set_loss(DataParalleledLoss(b.loss_cls, distributed=True))
    for _ in range(2):
        assert torch.equal(a.train(data), b.train(data))
