"""GAN and adversarial training through the Model API: a GAN learns a 2-D mixture's mean and variance, a FactorVAE's
discriminator learns while the VAE trains, the GAN API (Pixyz's tuple returns, fit), exact resume from a checkpoint,
and errors."""
from __future__ import annotations

from typing import Iterator

import pytest
import torch
from dgm_fixtures import Decoder, Encoder
from torch import nn

from pyro_dgm.distributions import Deterministic, EmpiricalDistribution, Normal
from pyro_dgm.losses import AdversarialJensenShannon, AdversarialKullbackLeibler, KullbackLeibler
from pyro_dgm.models import GAN, Model


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Small networks: threads only contend for the shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Generator(Deterministic):
    def __init__(self, z_dim: int = 2, hidden: int = 32) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.z_dim = z_dim
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 2))

    def forward(self, z):  # type: ignore[no-untyped-def]
        return {"x": self.net(z)}


class Discriminator(Deterministic):
    def __init__(self, x_dim: int = 2, hidden: int = 32) -> None:
        super().__init__(var=["t"], cond_var=["x"], name="d")
        self.net = nn.Sequential(nn.Linear(x_dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1), nn.Sigmoid())

    def forward(self, x):  # type: ignore[no-untyped-def]
        return {"t": self.net(x)}


def _gan(lr: float = 2e-3, **kwargs):  # type: ignore[no-untyped-def]
    prior = Normal(loc=0., scale=1., var=["z"], features_shape=[2], name="p_{prior}")
    p = (Generator() * prior).marginalize_var("z")
    adam = {"lr": lr, "betas": (0.5, 0.999)}
    return GAN(p, Discriminator(), optimizer_params=adam, d_optimizer_params=adam, **kwargs), p


CENTERS = torch.tensor([[1.0, -2.0], [5.0, -2.0]])
DATA_MEAN, DATA_VAR = torch.tensor([3.0, -2.0]), torch.tensor([4.25, 0.25])  # (2^2 + 0.5^2, 0.5^2)


def _mixture(n: int) -> torch.Tensor:
    """Two Gaussians (std 0.5) at (1, -2) and (5, -2), equal weights."""
    return CENTERS[torch.randint(0, 2, (n,))] + 0.5 * torch.randn(n, 2)


def _params(module: nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in module.parameters()]


# ------------------------------------------------------------------------------------------------ learning
def test_gan_moves_its_samples_mean_and_variance_to_the_mixture() -> None:
    """300 steps (batch 128). Margins, from 6 seeds: the distance between the means falls from about 3.6 to under
    0.35 (we ask for < 25% of the start and < 1), and the summed |log var ratio| over the two dims from 5.5-7.6 to
    under 1.4 (we ask for < 40% of the start)."""
    model, p = _gan()

    def gaps() -> tuple[float, float]:
        with torch.no_grad():
            x = p.sample(batch_n=4000, return_all=False)["x"]
        return float((x.mean(0) - DATA_MEAN).norm()), float((x.var(0).log() - DATA_VAR.log()).abs().sum())

    mean0, var0 = gaps()
    assert mean0 > 3 and var0 > 4
    for _ in range(300):
        model.train({"x": _mixture(128)})
    mean1, var1 = gaps()
    assert mean1 < min(0.25 * mean0, 1.0), (mean0, mean1)
    assert var1 < 0.4 * var0, (var0, var1)


Z = 4


class QShuffle(Deterministic):
    """q(z|x) with each latent dimension permuted across the batch: samples of the product of q's marginals."""

    def __init__(self, q: Encoder) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q_{shuffle}")
        self.q = q

    def forward(self, x):  # type: ignore[no-untyped-def]
        z = self.q.sample({"x": x}, return_all=False)["z"]
        return {"z": torch.stack([c[torch.randperm(len(c))] for c in z.T], dim=1)}


class TCDiscriminator(Deterministic):
    def __init__(self) -> None:
        super().__init__(var=["t"], cond_var=["z"], name="d")
        self.net = nn.Sequential(nn.Linear(Z, 64), nn.LeakyReLU(0.2), nn.Linear(64, 64), nn.LeakyReLU(0.2),
                                 nn.Linear(64, 1), nn.Sigmoid())

    def forward(self, z):  # type: ignore[no-untyped-def]
        return {"t": self.net(z)}


def test_factorvae_discriminator_rises_above_chance_while_the_vae_trains() -> None:
    """FactorVAE on scikit-learn's digits (binarized, 64 pixels), 4 latent dims, gamma = 1, 300 steps.

    Margins, from 4 seeds: the VAE loss (negative ELBO per image, on all 1797 images) falls from about 45 to about
    22 (we ask for < 30); the discriminator's accuracy on all images starts at 0.49-0.51 and ends at 0.545-0.57
    (averaged over the last 50 steps; we ask for > 0.53 and a rise of > 0.03; its standard error is about 0.01).
    """
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    X = torch.tensor(sklearn_datasets.load_digits().data > 7, dtype=torch.float32)
    q, p, d = Encoder(64, Z, 64), Decoder(64, Z, 64), TCDiscriminator()  # one hidden layer of 64 units
    prior = Normal(loc=0., scale=1., var=["z"], features_shape=[Z], name="p_{prior}")
    tc = AdversarialKullbackLeibler(q, QShuffle(q), discriminator=d, optimizer_params={"lr": 1e-2, "betas": (0.5, 0.9)})
    vae = (-p.log_prob().expectation(q) + KullbackLeibler(q, prior)).mean()
    model = Model(vae + 1.0 * tc, distributions=tc.distributions + [p], optimizer_params={"lr": 1e-3})
    assert all(t is not s for t in model.parameters() for s in d.parameters())
    data = {"x": X}
    with torch.no_grad():
        vae0 = float(vae.eval(data))
    acc0 = tc.discriminator_accuracy(data)
    accs = []
    for i in range(300):
        tc.loss_train({"x": X[torch.randint(0, len(X), (128,))]})
        if i == 0:  # the Model's step leaves the discriminator alone
            before = _params(d)
            model.train({"x": X[torch.randint(0, len(X), (128,))]})
            assert all(torch.equal(a, b) for a, b in zip(before, d.parameters()))
        else:
            model.train({"x": X[torch.randint(0, len(X), (128,))]})
        if i >= 250 and i % 10 == 9:
            accs.append(tc.discriminator_accuracy(data))
    with torch.no_grad():
        vae1 = float(vae.eval(data))
    acc1 = sum(accs) / len(accs)
    assert abs(acc0 - 0.5) < 0.05
    assert acc1 > 0.53 and acc1 > acc0 + 0.03, (acc0, accs)
    assert vae1 < 30 < vae0 - 10, (vae0, vae1)


# ------------------------------------------------------------------------------------------------ API
def test_gan_api_follows_pixyz() -> None:
    model, p = _gan()
    d = model.discriminator
    assert isinstance(model.loss_cls, AdversarialJensenShannon) and model.test_loss_cls is model.loss_cls
    assert str(model.loss_cls) == r"mean(D_{JS}^{Adv} \left[p_{data}(x)||p(x) \right])"  # Pixyz's text
    assert model.d_optimizer is model.loss_cls.d_optimizer
    assert list(model.distributions) == [p]
    assert not any(t is s for t in model.parameters() for s in d.parameters())
    assert "Discriminator" not in str(model)  # printed as Pixyz prints a GAN: the generator's Model text
    x = {"x": _mixture(64)}
    loss, d_loss = model.train(x)
    assert loss.shape == () and d_loss.shape == () and not loss.requires_grad and not d_loss.requires_grad
    assert model.last_terms["d_loss"] is not None
    before = _params(d)
    gen_before = _params(p)
    only = model.train(x, adversarial_loss=False)
    assert isinstance(only, torch.Tensor)
    assert all(torch.equal(a, b) for a, b in zip(before, d.parameters()))  # the discriminator did not move
    assert not all(torch.equal(a, b) for a, b in zip(gen_before, p.parameters()))  # the generator did
    test_loss, test_d_loss = model.test(x)
    assert float(test_d_loss) > 0 and isinstance(model.test(x, adversarial_loss=False), torch.Tensor)
    assert d.training  # loss_test restores the discriminator's mode
    assert model.step == 2 and model.loss_cls.d_steps == 1
    # an explicit data distribution is the same as the default one
    explicit = GAN(p, Discriminator(), p_data=EmpiricalDistribution(["x"]))
    assert str(explicit.loss_cls) == str(model.loss_cls)


def test_gan_fit_logs_the_discriminator_loss() -> None:
    model, _ = _gan()
    history = model.fit({"x": _mixture(96)}, epochs=2, batch_size=32, test_data={"x": _mixture(32)},
                        progress=False)
    assert len(history["train_loss"]) == 2
    assert len(history["train/d_loss"]) == 2 and len(history["test/d_loss"]) == 2
    assert model.step == 6 and model.loss_cls.d_steps == 6


def test_gan_checkpoint_resumes_exactly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    a, _ = _gan()
    batches = [{"x": _mixture(32)} for _ in range(5)]
    for b in batches[:3]:
        a.train(b)
    path = tmp_path / "gan.pt"
    a.save(path)
    for b in batches[3:]:
        a.train(b)
    torch.manual_seed(123)  # another initialization and another random state
    c, _ = _gan()
    c.load(path, resume=True)
    assert c.step == 3 and c.loss_cls.d_steps == 3
    for b in batches[3:]:
        c.train(b)
    for ma, mc in ((a.distributions, c.distributions), (a.discriminator, c.discriminator)):
        for ta, tc in zip(ma.state_dict().values(), mc.state_dict().values()):
            assert torch.equal(ta, tc)
    sa, sc = a.d_optimizer.state_dict()["state"], c.d_optimizer.state_dict()["state"]
    assert sa.keys() == sc.keys() and all(torch.equal(sa[k]["exp_avg"], sc[k]["exp_avg"]) for k in sa)
    # a discriminator of another size: the error names the tensor and both shapes
    prior = Normal(loc=0., scale=1., var=["z"], features_shape=[2], name="p_{prior}")
    small = GAN((Generator() * prior).marginalize_var("z"), Discriminator(hidden=16))
    with pytest.raises(ValueError, match=r"'net.0.weight' has shape \(16, 2\).*\(32, 2\)"):
        small.load(path, resume=True)


# ------------------------------------------------------------------------------------------------ errors
def test_gan_bad_inputs_raise_clear_errors() -> None:
    prior = Normal(loc=0., scale=1., var=["z"], features_shape=[2], name="p_{prior}")
    p = (Generator() * prior).marginalize_var("z")
    with pytest.raises(TypeError, match="discriminator"):
        GAN(p)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"look like GAN\(p_data, p, discriminator\).*p_data=\.\.\."):
        GAN(EmpiricalDistribution(["x"]), p, Discriminator())  # the seed's form: the data distribution goes by keyword
    with pytest.raises(TypeError, match=r"look like GAN\(p_data, p, discriminator\)"):
        GAN(None, p, Discriminator())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="discriminator must be a pyro_dgm Distribution"):
        GAN(p, nn.Linear(2, 1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same variables"):
        GAN(p, Discriminator(), p_data=EmpiricalDistribution(["y"]))

    class DY(Discriminator):
        def __init__(self) -> None:
            Deterministic.__init__(self, var=["t"], cond_var=["y"], name="d")
            self.net = nn.Linear(2, 1)

        def forward(self, y):  # type: ignore[no-untyped-def, override]
            return {"t": torch.sigmoid(self.net(y))}

    with pytest.raises(ValueError, match=r"conditioned on \['y'\]"):
        GAN(p, DY())
    fixed = Normal(loc=torch.zeros(2), scale=1., var=["x"], name="p")
    with pytest.raises(ValueError, match="no parameters to optimize"):
        GAN(fixed, Discriminator())
    with pytest.raises(TypeError, match="p must be a pyro_dgm Distribution"):
        GAN(nn.Linear(2, 2), Discriminator())  # type: ignore[arg-type]
