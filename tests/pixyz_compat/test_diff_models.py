"""The Model API under Pixyz programs: the models of Pixyz's README, examples and tutorials (VAE, CVAE, M2, JMVAE,
MVAE, VI, ML, hierarchical VI, MMD-VAE, GAN, FactorVAE, DMM, VRNN), trained a few steps under pixyz 0.3.3 and under
pyro_dgm (import renamed) from the same seed, comparing every training loss, the test loss, samples and the printed
model.

Each step gets its own data tensor (``x.clone()``): Pixyz's global cache keys on the tensor, so training twice on the
same tensor object fails under Pixyz (see ``test_pixyz_cache_reuses_a_freed_graph``).
"""
from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, run_both, run_pixyz, run_pyro_dgm

X_DIM, Z_DIM, Y_DIM, N = 8, 2, 3, 8


def _nets(pd: Any) -> Any:
    """Encoder/decoder classes written against the program's own ``pixyz.distributions`` module."""
    from torch import nn
    from torch.nn import functional as F

    class Q(pd.Normal):  # q(z|x)
        def __init__(self, name: str = "q") -> None:
            super().__init__(var=["z"], cond_var=["x"], name=name)
            self.fc = nn.Linear(X_DIM, 2 * Z_DIM)

        def forward(self, x: torch.Tensor) -> dict:
            h = self.fc(x)
            return {"loc": h[:, :Z_DIM], "scale": F.softplus(h[:, Z_DIM:]) + 0.1}

    class QY(pd.Normal):  # q(z|y)
        def __init__(self, name: str = "q_y") -> None:
            super().__init__(var=["z"], cond_var=["y"], name=name)
            self.fc = nn.Linear(Y_DIM, 2 * Z_DIM)

        def forward(self, y: torch.Tensor) -> dict:
            h = self.fc(y)
            return {"loc": h[:, :Z_DIM], "scale": F.softplus(h[:, Z_DIM:]) + 0.1}

    class QXY(pd.Normal):  # q(z|x,y)
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x", "y"], name="q")
            self.fc = nn.Linear(X_DIM + Y_DIM, 2 * Z_DIM)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict:
            h = self.fc(torch.cat([x, y], -1))
            return {"loc": h[:, :Z_DIM], "scale": F.softplus(h[:, Z_DIM:]) + 0.1}

    class P(pd.Bernoulli):  # p(x|z)
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(Z_DIM, X_DIM)

        def forward(self, z: torch.Tensor) -> dict:
            return {"probs": torch.sigmoid(self.fc(z))}

    class PY(pd.Categorical):  # p(y|z)
        def __init__(self) -> None:
            super().__init__(var=["y"], cond_var=["z"], name="p")
            self.fc = nn.Linear(Z_DIM, Y_DIM)

        def forward(self, z: torch.Tensor) -> dict:
            return {"probs": torch.softmax(self.fc(z), -1)}

    class PXZY(pd.Bernoulli):  # p(x|z,y)
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z", "y"], name="p")
            self.fc = nn.Linear(Z_DIM + Y_DIM, X_DIM)

        def forward(self, z: torch.Tensor, y: torch.Tensor) -> dict:
            return {"probs": torch.sigmoid(self.fc(torch.cat([z, y], -1)))}

    class F_(pd.Categorical):  # f(y|x), M2's classifier
        def __init__(self) -> None:
            super().__init__(var=["y"], cond_var=["x"], name="f")
            self.fc = nn.Linear(X_DIM, Y_DIM)

        def forward(self, x: torch.Tensor) -> dict:
            return {"probs": torch.softmax(self.fc(x), -1)}

    prior = pd.Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[Z_DIM],
                      name="p_{prior}")
    return dict(Q=Q, QY=QY, QXY=QXY, P=P, PY=PY, PXZY=PXZY, F=F_, prior=prior)


def _data() -> dict:
    x = torch.rand(N, X_DIM).round()
    y = torch.eye(Y_DIM)[torch.randint(0, Y_DIM, (N,))]
    return {"x": x, "y": y}


def _train(model: Any, data: dict, steps: int = 3, **kwargs: Any) -> list:
    return [model.train({k: v.clone() for k, v in data.items()}, **kwargs) for _ in range(steps)]


# ------------------------------------------------------------------------------------------------ VAEs
def prog_readme_vae() -> Any:
    from torch import optim

    import pixyz.distributions as pd
    from pixyz.losses import Expectation as E
    from pixyz.losses import KullbackLeibler, LogProb
    from pixyz.models import Model

    n = _nets(pd)
    p, q, prior = n["P"](), n["Q"](), n["prior"]
    loss = (KullbackLeibler(q, prior) - E(q, LogProb(p))).mean()
    model = Model(loss, distributions=[p, q], optimizer=optim.Adam, optimizer_params={"lr": 1e-2})
    data = _data()
    losses = _train(model, data)
    return {"losses": losses, "test": model.test({"x": data["x"].clone()}), "loss_text": loss.loss_text,
            "model": str(model), "sample": p.sample(prior.sample(batch_n=2))["x"],
            "joint": (p * prior).prob_joint_factorized_and_text}


def prog_vae_class() -> Any:
    from torch import optim

    import pixyz.distributions as pd
    from pixyz.losses import KullbackLeibler
    from pixyz.models import VAE

    n = _nets(pd)
    p, q, prior = n["P"](), n["Q"](), n["prior"]
    model = VAE(q, p, regularizer=KullbackLeibler(q, prior), optimizer=optim.Adam, optimizer_params={"lr": 1e-2})
    data = _data()
    return {"losses": _train(model, {"x": data["x"]}), "test": model.test({"x": data["x"].clone()}),
            "model": str(model)}


def prog_cvae() -> Any:
    from torch import optim

    import pixyz.distributions as pd
    from pixyz.losses import KullbackLeibler
    from pixyz.models import Model

    n = _nets(pd)
    q, p = n["QXY"](), n["PXZY"]()
    prior = n["prior"]
    loss = (KullbackLeibler(q, prior) - p.log_prob().expectation(q)).mean()
    model = Model(loss, distributions=[p, q], optimizer=optim.Adam, optimizer_params={"lr": 1e-2})
    data = _data()
    return {"losses": _train(model, data), "test": model.test({k: v.clone() for k, v in data.items()}),
            "model": str(model), "input_var": sorted(loss.input_var)}


def prog_m2() -> Any:
    """M2 (semi-supervised): labelled and unlabelled ELBOs, a classifier's NLL weighted by a Parameter.

    The classifier is a Categorical here: Pixyz's notebook uses a RelaxedCategorical, which Pixyz scores as a sum of
    per-class Bernoulli cross-entropies (pyro_dgm scores it as the categorical it relaxes: a deliberate difference,
    tested with the distributions)."""
    from torch import optim

    import pixyz.distributions as pd
    from pixyz.losses import ELBO, Parameter
    from pixyz.models import Model

    n = _nets(pd)
    p, q, f, prior = n["PXZY"](), n["QXY"](), n["F"](), n["prior"]
    q_u = q.replace_var(x="x_u", y="y_u") * f.replace_var(x="x_u", y="y_u")
    p_u = p.replace_var(x="x_u", y="y_u") * prior
    elbo_u = ELBO(p_u, q_u)
    elbo = ELBO(p * prior, q)
    nll = -f.log_prob()
    loss = -elbo_u.mean() - elbo.mean() + (Parameter("alpha") * nll).mean()
    model = Model(loss, test_loss=nll.mean(), distributions=[p, q, f], optimizer=optim.Adam,
                  optimizer_params={"lr": 1e-2})
    data = _data()
    data["x_u"] = torch.rand(N, X_DIM).round()
    alpha = torch.tensor(2.)
    losses = _train(model, {**data, "alpha": alpha})
    return {"losses": losses, "test": model.test({k: v.clone() for k, v in data.items()}), "model": str(model),
            "loss_text": str(loss), "input_var": sorted(loss.input_var)}


def prog_jmvae() -> Any:
    from torch import optim

    import pixyz.distributions as pd
    from pixyz.losses import KullbackLeibler
    from pixyz.models import Model

    n = _nets(pd)
    q, q_x, q_y = n["QXY"](), n["Q"]("q_x"), n["QY"]("q_y")
    p_x, p_y, prior = n["P"](), n["PY"](), n["prior"]
    p_x.name, p_y.name = "p_{x}", "p_{y}"  # braces: sympy would mangle "\\log p_x(x,y|z)" (as Pixyz prints it)
    p = p_x * p_y
    loss = (KullbackLeibler(q, prior) - p.log_prob().expectation(q) + KullbackLeibler(q, q_x)
            + KullbackLeibler(q, q_y)).mean()
    model = Model(loss, distributions=[p_x, p_y, q, q_x, q_y], optimizer=optim.Adam, optimizer_params={"lr": 1e-2})
    data = _data()
    return {"losses": _train(model, data), "test": model.test({k: v.clone() for k, v in data.items()}),
            "model": str(model)}


@pytest.mark.parametrize("poe", ["ProductOfNormal"])
def test_mvae(poe: str) -> None:
    # (ElementWiseProductOfNormal: Pixyz 0.3.3 cannot sample it, its _get_input_dict calls a method of object)
    def prog_mvae() -> Any:
        from torch import optim

        import pixyz.distributions as pd
        from pixyz.losses import KullbackLeibler
        from pixyz.models import Model

        n = _nets(pd)
        q_x, q_y = n["Q"]("q_x"), n["QY"]("q_y")
        p_x, p_y, prior = n["P"](), n["PY"](), n["prior"]
        data = _data()
        if poe == "ProductOfNormal":  # MVAE: experts q(z|x), q(z|y) and the prior
            q = pd.ProductOfNormal([q_x, q_y], name="q")
            p = p_x * p_y
            loss = (KullbackLeibler(q, prior) - p.log_prob().expectation(q) + KullbackLeibler(q_x, prior)
                    - p_x.log_prob().expectation(q_x) + KullbackLeibler(q_y, prior)
                    - p_y.log_prob().expectation(q_y)).mean()
            trained = [p_x, p_y, q_x, q_y]
            only_x = q.sample({"x": data["x"]})["z"]
        else:  # each element of x is an expert; zeros are missing experts
            q = pd.ElementWiseProductOfNormal(q_x, name="q")
            loss = (KullbackLeibler(q, prior) - p_x.log_prob().expectation(q)).mean()
            trained = [p_x, q_x]
            only_x = q.sample({"x": torch.zeros_like(data["x"])})["z"]
            data = {"x": data["x"]}
        model = Model(loss, distributions=trained, optimizer=optim.Adam, optimizer_params={"lr": 1e-2})
        return {"losses": _train(model, data), "model": str(model), "only_x": only_x,
                "text": q.prob_text}

    ref, ours = run_both(prog_mvae)
    assert_same(ref, ours)


# ------------------------------------------------------------------------------------------------ VI, ML
def prog_vi() -> Any:
    from torch import optim

    import pixyz.distributions as pd
    from pixyz.models import VI

    n = _nets(pd)
    p, q, prior = n["P"](), n["Q"](), n["prior"]
    model = VI(p * prior, q, optimizer=optim.Adam, optimizer_params={"lr": 1e-2})
    data = _data()
    return {"losses": _train(model, {"x": data["x"]}), "test": model.test({"x": data["x"].clone()}),
            "model": str(model)}


def prog_hierarchical_vi() -> Any:
    """Two latent layers: p(x|z1) p(z1|z2) p(z2) and q(z1|x) q(z2|z1)."""
    from torch import nn, optim
    from torch.nn import functional as F

    import pixyz.distributions as pd
    from pixyz.models import VI

    n = _nets(pd)

    class Q2(pd.Normal):
        def __init__(self) -> None:
            super().__init__(var=["z2"], cond_var=["z"], name="q")
            self.fc = nn.Linear(Z_DIM, 2)

        def forward(self, z: torch.Tensor) -> dict:
            h = self.fc(z)
            return {"loc": h[:, :1], "scale": F.softplus(h[:, 1:]) + 0.1}

    class P1(pd.Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["z2"], name="p")
            self.fc = nn.Linear(1, Z_DIM)

        def forward(self, z2: torch.Tensor) -> dict:
            return {"loc": self.fc(z2), "scale": torch.ones(z2.shape[0], Z_DIM)}

    p2 = pd.Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z2"], features_shape=[1], name="p")
    p = n["P"]() * P1() * p2
    q = n["Q"]() * Q2()
    model = VI(p, q, optimizer=optim.Adam, optimizer_params={"lr": 1e-2})
    data = _data()
    return {"losses": _train(model, {"x": data["x"]}), "model": str(model),
            "text": [p.prob_joint_factorized_and_text, q.prob_joint_factorized_and_text]}


def prog_ml() -> Any:
    from torch import nn, optim

    import pixyz.distributions as pd
    from pixyz.models import ML

    class Classifier(pd.Categorical):
        def __init__(self) -> None:
            super().__init__(var=["y"], cond_var=["x"], name="p")
            self.fc = nn.Linear(X_DIM, Y_DIM)

        def forward(self, x: torch.Tensor) -> dict:
            return {"probs": torch.softmax(self.fc(x), -1)}

    p = Classifier()
    model = ML(p, optimizer=optim.Adam, optimizer_params={"lr": 1e-2})
    data = _data()
    return {"losses": _train(model, data), "test": model.test({k: v.clone() for k, v in data.items()}),
            "model": str(model)}


# ------------------------------------------------------------------------------------------------ Model options
def prog_model_options() -> Any:
    """retain_graph, clip_grad_norm, clip_grad_value and keyword arguments of train/test."""
    from torch import optim

    import pixyz.distributions as pd
    from pixyz.losses import KullbackLeibler
    from pixyz.models import Model

    n = _nets(pd)
    out = {}
    for name, kwargs in {"norm": {"clip_grad_norm": 0.05}, "value": {"clip_grad_value": 0.01},
                         "retain": {"retain_graph": True}}.items():
        p, q, prior = n["P"](), n["Q"](), n["prior"]
        loss = (KullbackLeibler(q, prior) - p.log_prob().expectation(q)).mean()
        model = Model(loss, distributions=[p, q], optimizer=optim.SGD, optimizer_params={"lr": 0.5}, **kwargs)
        data = _data()
        out[name] = _train(model, {"x": data["x"]})
        out[name + "_weights"] = [t.detach().clone() for t in p.parameters()]
        out[name + "_test"] = model.test({"x": data["x"].clone()})
    return out


# ------------------------------------------------------------------------------------------------ MMD-VAE
def prog_mmd_vae_reconstruction() -> Any:
    """MMD-VAE's notebook writes the reconstruction as CrossEntropy(q, p); its MMD term differs (see below)."""
    from torch import optim

    import pixyz.distributions as pd
    from pixyz.losses import CrossEntropy
    from pixyz.models import Model

    n = _nets(pd)
    p, q = n["P"](), n["Q"]()
    loss = CrossEntropy(q, p).mean()
    model = Model(loss, distributions=[p, q], optimizer=optim.Adam, optimizer_params={"lr": 1e-2})
    data = _data()
    return {"losses": _train(model, {"x": data["x"]}), "model": str(model)}


# ------------------------------------------------------------------------------------------------ GAN, FactorVAE
def _gan_nets(pd: Any) -> Any:
    from torch import nn

    class Generator(pd.Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(Z_DIM, X_DIM)

        def forward(self, z: torch.Tensor) -> dict:
            return {"x": torch.sigmoid(self.fc(z))}

    class Discriminator(pd.Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["t"], cond_var=["x"], name="d")
            self.fc = nn.Linear(X_DIM, 1)

        def forward(self, x: torch.Tensor) -> dict:
            return {"t": torch.sigmoid(self.fc(x))}

    return Generator, Discriminator


def prog_gan() -> Any:
    from torch import optim

    import pixyz.distributions as pd
    from pixyz.models import GAN

    Generator, Discriminator = _gan_nets(pd)
    prior = pd.Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[Z_DIM],
                      name="p_{prior}")
    p = (Generator() * prior).marginalize_var("z")
    model = GAN(p, Discriminator(), optimizer=optim.Adam, optimizer_params={"lr": 1e-2},
                d_optimizer=optim.Adam, d_optimizer_params={"lr": 1e-2})
    x = torch.rand(N, X_DIM)
    steps = [model.train({"x": x.clone()}) for _ in range(3)]
    return {"steps": steps, "g_only": model.train({"x": x.clone()}, adversarial_loss=False),
            "test": model.test({"x": x.clone()}), "test_g": model.test({"x": x.clone()}, adversarial_loss=False),
            "model": str(model), "sample": p.sample(batch_n=2)["x"]}


def _factor_vae_parts(pd: Any, q: Any) -> tuple[Any, Any]:
    """FactorVAE's q_shuffle(z|x) (each latent dim permuted across the batch) and its discriminator d(t|z)."""
    from torch import nn

    class QShuffle(pd.Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q_{shuffle}")

        def forward(self, x: torch.Tensor) -> dict:
            z = q.sample({"x": x}, return_all=False)["z"]
            return {"z": torch.stack([c[torch.randperm(c.shape[0])] for c in z.t()], 1)}

    class D(pd.Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["t"], cond_var=["z"], name="d")
            self.fc = nn.Linear(Z_DIM, 1)

        def forward(self, z: torch.Tensor) -> dict:
            return {"t": torch.sigmoid(self.fc(z))}

    return QShuffle(), D()


def prog_factor_vae() -> Any:
    """FactorVAE: reconstruction + KL + gamma * AdversarialKullbackLeibler(q, q_shuffle) with its discriminator."""
    from torch import optim

    import pixyz.distributions as pd
    from pixyz.losses import AdversarialKullbackLeibler, KullbackLeibler
    from pixyz.models import Model

    n = _nets(pd)
    p, q, prior = n["P"](), n["Q"](), n["prior"]

    q_shuffle, d = _factor_vae_parts(pd, q)
    tc = AdversarialKullbackLeibler(q, q_shuffle, discriminator=d, optimizer=optim.Adam,
                                    optimizer_params={"lr": 1e-2})
    loss = (KullbackLeibler(q, prior) - p.log_prob().expectation(q)).mean() + 6 * tc
    model = Model(loss, distributions=[p, q], optimizer=optim.Adam, optimizer_params={"lr": 1e-2})
    data = _data()
    out = []
    for _ in range(2):
        out.append(model.train({"x": data["x"].clone()}))
        out.append(tc.loss_train({"x": data["x"].clone()}))
    return {"steps": out, "model": str(model), "test_d": tc.loss_test({"x": data["x"].clone()})}


# ------------------------------------------------------------------------------------------------ sequences
def _dmm_nets(pd: Any) -> Any:
    from torch import nn
    from torch.nn import functional as F

    class Emission(pd.Bernoulli):  # p(x|z)
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(Z_DIM, X_DIM)

        def forward(self, z: torch.Tensor) -> dict:
            return {"probs": torch.sigmoid(self.fc(z))}

    class Transition(pd.Normal):  # p(z|z_prev)
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["z_prev"], name="p")
            self.fc = nn.Linear(Z_DIM, 2 * Z_DIM)

        def forward(self, z_prev: torch.Tensor) -> dict:
            h = self.fc(z_prev)
            return {"loc": h[:, :Z_DIM], "scale": F.softplus(h[:, Z_DIM:]) + 0.1}

    class Combiner(pd.Normal):  # q(z|x,z_prev)
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x", "z_prev"], name="q")
            self.fc = nn.Linear(X_DIM + Z_DIM, 2 * Z_DIM)

        def forward(self, x: torch.Tensor, z_prev: torch.Tensor) -> dict:
            h = self.fc(torch.cat([x, z_prev], -1))
            return {"loc": h[:, :Z_DIM], "scale": F.softplus(h[:, Z_DIM:]) + 0.1}

    return Emission(), Transition(), Combiner()


def prog_dmm() -> Any:
    from torch import optim

    import pixyz.distributions as pd
    from pixyz.losses import IterativeLoss, KullbackLeibler
    from pixyz.models import Model

    emission, transition, combiner = _dmm_nets(pd)
    step = KullbackLeibler(combiner, transition) - emission.log_prob().expectation(combiner)
    loss = IterativeLoss(step, max_iter=4, series_var=["x"], update_value={"z": "z_prev"}).mean()
    model = Model(loss, distributions=[emission, transition, combiner], optimizer=optim.Adam,
                  optimizer_params={"lr": 1e-2}, clip_grad_value=10.)
    xs = torch.rand(4, N, X_DIM).round()
    z0 = torch.zeros(N, Z_DIM)
    losses = [model.train({"x": xs.clone(), "z_prev": z0.clone()}) for _ in range(3)]
    mask = torch.tensor([1., 1., 1., 0.])[:, None].expand(4, N)
    return {"losses": losses, "masked": model.test({"x": xs.clone(), "z_prev": z0.clone()}, mask=mask),
            "loss_text": str(loss), "model": str(model)}


def prog_dmm_with_an_rnn_expectation() -> Any:
    """Pixyz's DMM example: a bidirectional GRU as a ``Deterministic`` h(x) over the whole sequence, the iterative
    loss under ``Expectation(rnn, ...)``, ``RMSprop`` with ``clip_grad_value``, then generation from the prior."""
    from torch import nn, optim
    from torch.nn import functional as F

    import pixyz.distributions as pd
    from pixyz.losses import Expectation as E
    from pixyz.losses import IterativeLoss, KullbackLeibler, LogProb
    from pixyz.models import Model

    H, T = 3, 4

    class RNN(pd.Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["h"], cond_var=["x"], name="f")
            self.rnn = nn.GRU(X_DIM, H, bidirectional=True)
            self.h0 = nn.Parameter(torch.zeros(2, 1, H))

        def forward(self, x: torch.Tensor) -> dict:
            h, _ = self.rnn(x, self.h0.expand(2, x.size(1), H).contiguous())
            return {"h": h}

    class Inference(pd.Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["h", "z_prev"], name="q")
            self.fc = nn.Linear(2 * H + Z_DIM, 2 * Z_DIM)

        def forward(self, h: torch.Tensor, z_prev: torch.Tensor) -> dict:
            o = self.fc(torch.cat([h, z_prev], -1))
            return {"loc": o[:, :Z_DIM], "scale": F.softplus(o[:, Z_DIM:])}

    decoder, prior, _ = _dmm_nets(pd)
    encoder, rnn = Inference(), RNN()
    generate_from_prior = prior * decoder
    step_loss = (KullbackLeibler(encoder, prior) - E(encoder, LogProb(decoder))).mean()
    loss = E(rnn, IterativeLoss(step_loss, max_iter=T, series_var=["x", "h"], update_value={"z": "z_prev"})).mean()
    dmm = Model(loss, distributions=[rnn, encoder, decoder, prior], optimizer=optim.RMSprop,
                optimizer_params={"lr": 5e-3}, clip_grad_value=10)
    xs = [torch.rand(T, N, X_DIM).round() for _ in range(3)]
    losses = [dmm.train({"x": x, "z_prev": torch.zeros(N, Z_DIM)}) for x in xs]
    test = dmm.test({"x": xs[0].clone(), "z_prev": torch.zeros(N, Z_DIM)})
    z_prev, generated = torch.zeros(2, Z_DIM), []
    for _ in range(T):
        s = generate_from_prior.sample({"z_prev": z_prev})
        generated.append(decoder.sample_mean({"z": s["z"]}))
        z_prev = s["z"]
    return {"losses": losses, "test": test, "generated": torch.stack(generated), "loss_text": str(loss),
            "model": str(dmm)}


def prog_vrnn() -> Any:
    """VRNN: a recurrent state h updated by a deterministic GRU cell at each step (update_value h -> h_prev)."""
    from torch import nn, optim
    from torch.nn import functional as F

    import pixyz.distributions as pd
    from pixyz.losses import IterativeLoss, KullbackLeibler
    from pixyz.models import Model

    H = 4

    class Prior(pd.Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["h_prev"], name="p")
            self.fc = nn.Linear(H, 2 * Z_DIM)

        def forward(self, h_prev: torch.Tensor) -> dict:
            o = self.fc(h_prev)
            return {"loc": o[:, :Z_DIM], "scale": F.softplus(o[:, Z_DIM:]) + 0.1}

    class Encoder(pd.Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x", "h_prev"], name="q")
            self.fc = nn.Linear(X_DIM + H, 2 * Z_DIM)

        def forward(self, x: torch.Tensor, h_prev: torch.Tensor) -> dict:
            o = self.fc(torch.cat([x, h_prev], -1))
            return {"loc": o[:, :Z_DIM], "scale": F.softplus(o[:, Z_DIM:]) + 0.1}

    class Decoder(pd.Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z", "h_prev"], name="p")
            self.fc = nn.Linear(Z_DIM + H, X_DIM)

        def forward(self, z: torch.Tensor, h_prev: torch.Tensor) -> dict:
            return {"probs": torch.sigmoid(self.fc(torch.cat([z, h_prev], -1)))}

    class Recurrence(pd.Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["h"], cond_var=["x", "z", "h_prev"], name="f")
            self.rnn = nn.GRUCell(X_DIM + Z_DIM, H)

        def forward(self, x: torch.Tensor, z: torch.Tensor, h_prev: torch.Tensor) -> dict:
            return {"h": self.rnn(torch.cat([x, z], -1), h_prev)}

    prior, encoder, decoder, recurrence = Prior(), Encoder(), Decoder(), Recurrence()
    encoder_with_recurrence = encoder * recurrence
    generate_from_prior = prior * decoder * recurrence
    step = (KullbackLeibler(encoder, prior) - decoder.log_prob().expectation(encoder_with_recurrence)).mean()
    loss = IterativeLoss(step, series_var=["x"], update_value={"h": "h_prev"})
    model = Model(loss, distributions=[prior, encoder, decoder, recurrence], optimizer=optim.Adam,
                  optimizer_params={"lr": 1e-2})
    xs = torch.rand(3, N, X_DIM).round()
    h0 = torch.zeros(N, H)
    losses = [model.train({"x": xs.clone(), "h_prev": h0.clone()}) for _ in range(3)]
    gen = generate_from_prior.sample({"h_prev": torch.zeros(2, H)})
    return {"losses": losses, "loss_text": str(loss), "model": str(model), "gen": sorted(gen),
            "gen_x": gen["x"].shape}


def prog_modes_after_test() -> Any:
    """After test(), Pixyz leaves the trained distributions in eval mode: a sample drawn then uses the batch norm's
    running statistics and no dropout; the next train() switches them back."""
    from torch import nn, optim

    import pixyz.distributions as pd
    from pixyz.models import Model

    class P(pd.Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["y"], name="p")
            self.net = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Linear(4, 3))

        def forward(self, y: torch.Tensor) -> dict:
            return {"loc": self.net(y), "scale": torch.ones(y.shape[0], 3)}

    p = P()
    model = Model(-p.log_prob().mean(), distributions=[p], optimizer=optim.Adam, optimizer_params={"lr": 1e-2})
    data = {"x": torch.randn(6, 3), "y": torch.randn(6, 2)}
    out = {"train": model.train({k: v.clone() for k, v in data.items()}),
           "test": model.test({k: v.clone() for k, v in data.items()})}
    out["mode_after_test"] = [m.training for m in p.modules()]
    out["mean_after_test"] = p.sample_mean({"y": data["y"].clone()})
    out["running_mean"] = p.net[1].running_mean.clone()
    out["train2"] = model.train({k: v.clone() for k, v in data.items()})
    out["mode_after_train"] = [m.training for m in p.modules()]
    return out


def prog_keyword_forms() -> Any:
    """Pixyz's parameter names: train(train_x_dict=...), test(test_x_dict=...), GAN's adversarial_loss=,
    loss_train(train_x_dict=...)/loss_test(test_x_dict=...), Model(loss=..., test_loss=...)."""
    from torch import optim

    import pixyz.distributions as pd
    from pixyz.losses import KullbackLeibler
    from pixyz.models import GAN, Model

    n = _nets(pd)
    p, q, prior = n["P"](), n["Q"](), n["prior"]
    loss = (KullbackLeibler(q, prior) - p.log_prob().expectation(q)).mean()
    model = Model(loss=loss, test_loss=KullbackLeibler(q, prior).mean(), distributions=[p, q],
                  optimizer=optim.Adam, optimizer_params={"lr": 1e-2})
    x = _data()["x"]
    out = {"train": model.train(train_x_dict={"x": x.clone()}), "test": model.test(test_x_dict={"x": x.clone()})}
    Generator, Discriminator = _gan_nets(pd)
    gen = (Generator() * prior).marginalize_var("z")
    gan = GAN(p=gen, discriminator=Discriminator(), optimizer_params={"lr": 1e-2}, d_optimizer_params={"lr": 1e-2},
              clip_grad_norm=1.0, clip_grad_value=0.5)
    out["gan"] = gan.train(train_x_dict={"x": x.clone()}, adversarial_loss=True)
    out["gan_g"] = gan.train(train_x_dict={"x": x.clone()}, adversarial_loss=False)
    out["d_train"] = gan.loss_cls.loss_train(train_x_dict={"x": x.clone()})
    out["d_test"] = gan.loss_cls.loss_test(test_x_dict={"x": x.clone()})
    out["gan_test"] = gan.test(test_x_dict={"x": x.clone()}, adversarial_loss=True)
    return out


PROGRAMS = [prog_modes_after_test, prog_keyword_forms, prog_readme_vae, prog_vae_class, prog_cvae, prog_m2, prog_jmvae, prog_vi,
            prog_hierarchical_vi, prog_ml, prog_model_options, prog_mmd_vae_reconstruction, prog_gan, prog_dmm,
            prog_dmm_with_an_rnn_expectation, prog_vrnn]


@pytest.mark.parametrize("program", PROGRAMS, ids=[p.__name__[5:] for p in PROGRAMS])
def test_same_as_pixyz(program: Any) -> None:
    ref, ours = run_both(program)
    assert_same(ref, ours)


# ------------------------------------------------------------------------------------------------ where Pixyz is wrong
def test_factor_vae_total_correlation_trains_the_encoder() -> None:
    """Pixyz's adversarial terms draw the compared samples with ``sample()``, whose default is ``reparam=False``, so
    in FactorVAE the total-correlation term :math:`D_{KL}^{Adv}[q(z|x)||q_{shuffle}(z|x)]` gives the encoder *no*
    gradient (its value is right, its gradient is zero): the term does not train what it regularizes. pyro_dgm draws
    them reparameterized. The estimate is :math:`mean(\\log d - \\log(1 - d)) = mean(w \\cdot z + b)` for a logistic
    discriminator, so its gradient with respect to the encoder's loc bias is the discriminator's weight ``w``.
    The whole FactorVAE step is the same as Pixyz's up to that gradient (first loss equal)."""
    def program() -> Any:
        import pixyz.distributions as pd
        from pixyz.losses import AdversarialKullbackLeibler

        q = _nets(pd)["Q"]()

        q_shuffle, d = _factor_vae_parts(pd, q)
        tc = AdversarialKullbackLeibler(q, q_shuffle, discriminator=d)
        w = d.fc.weight.detach()[0].clone()
        value = tc.eval({"x": _data()["x"]})
        value.backward()
        return {"value": value.detach(), "loc_bias_grad": q.fc.bias.grad, "w": w,
                "d_loss": tc.loss_train({"x": _data()["x"]}).detach(), "text": str(tc)}

    ref, ours = run_both(program)
    assert_same({k: ref[k] for k in ("value", "w", "d_loss", "text")},
                {k: ours[k] for k in ("value", "w", "d_loss", "text")})
    assert ref["loc_bias_grad"] is None  # Pixyz: no gradient reaches the encoder
    torch.testing.assert_close(ours["loc_bias_grad"][:Z_DIM], ours["w"])  # d/d loc of mean(w.z + b) = w


def test_pixyz_cache_reuses_a_freed_graph() -> None:
    """Pixyz memoizes ``get_params`` in a global LRU cache keyed on the input tensors, across optimizer steps: training
    twice on the *same* tensor object reuses the first step's parameters (computed with the old weights, their graph
    already freed), so the second ``backward`` fails. pyro_dgm's cache lives for one evaluation: the second step
    recomputes with the new weights and equals a step on a fresh copy of the data."""
    def program(same_tensor: bool) -> Any:
        from torch import optim

        import pixyz.distributions as pd
        from pixyz.losses import KullbackLeibler
        from pixyz.models import Model

        n = _nets(pd)
        p, q, prior = n["P"](), n["Q"](), n["prior"]
        model = Model((KullbackLeibler(q, prior) - p.log_prob().expectation(q)).mean(), distributions=[p, q],
                      optimizer=optim.Adam, optimizer_params={"lr": 1e-2})
        x = _data()["x"]
        return [model.train({"x": x if same_tensor else x.clone()}) for _ in range(2)]

    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        run_pixyz(lambda: program(True))
    fresh = run_pixyz(lambda: program(False))
    assert_same(fresh, run_pyro_dgm(lambda: program(True)))


def _clear_pixyz_cache() -> None:
    """Empty Pixyz's process-wide ``get_params`` cache (the ``functools.lru_cache`` in the closure of its method)."""
    from pixyz.distributions.distributions import DistributionBase

    cells = dict(zip(DistributionBase.get_params.__code__.co_freevars, DistributionBase.get_params.__closure__))
    cells["wrapper"].cell_contents.cache_clear()


def test_a_network_without_inputs_trains_past_the_first_step() -> None:
    """The same cache, keyed on no input at all: ``VI``'s q(z), whose ``forward`` takes no argument, gets the first
    step's parameters back at the second step, and Pixyz's second ``backward`` fails. Emptying Pixyz's cache between
    steps gives Pixyz's right numbers, which pyro_dgm computes without that help."""
    def program(between_steps: Any) -> Any:
        from torch import optim

        from pixyz.distributions import Normal
        from pixyz.models import VI

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], name="q", features_shape=[2])
                self.m = torch.nn.Parameter(torch.zeros(2))
                self.s = torch.nn.Parameter(torch.zeros(2))

            def forward(self) -> dict:
                return {"loc": self.m, "scale": torch.exp(self.s)}

        p = Normal(loc="z", scale=torch.ones(2), var=["x"], cond_var=["z"], name="p")
        prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
        q = Q()
        vi = VI(p * prior, q, optimizer=optim.Adam, optimizer_params={"lr": 0.1})
        x = torch.tensor([[2.0, 1.5]])
        losses = []
        for _ in range(3):
            losses.append(vi.train({"x": x}, batch_size=4))
            between_steps()
        return losses, q.m, q.s

    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        run_pixyz(lambda: program(lambda: None))
    assert_same(run_pixyz(lambda: program(_clear_pixyz_cache)), run_pyro_dgm(lambda: program(lambda: None)))


def _model_program(kind: Any) -> Any:
    def program() -> Any:
        import torch
        from torch import nn
        from pixyz.distributions import Normal
        from pixyz.losses import KullbackLeibler
        from pixyz.models import Model

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], name="q")
                self.loc, self.s = nn.Linear(3, 2), nn.Linear(3, 2)

            def forward(self, x):  # type: ignore[no-untyped-def]
                return {"loc": self.loc(x), "scale": nn.functional.softplus(self.s(x)) + 0.1}

        class P(Normal):
            def __init__(self) -> None:
                super().__init__(var=["x"], cond_var=["z"], name="p")
                self.loc = nn.Linear(2, 3)

            def forward(self, z):  # type: ignore[no-untyped-def]
                return {"loc": self.loc(z), "scale": torch.ones(1)}

        q, p = Q(), P()
        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p_{prior}")
        loss = (-p.log_prob().expectation(q) + KullbackLeibler(q, prior)).mean()
        x = torch.randn(4, 3)
        if kind == "loss set later":
            model = Model(None, distributions=[q, p])
            model.set_loss(loss)
        elif kind == "a torch module with a log_prob method":  # trained as a plain network, as Pixyz does
            model = Model(loss, distributions=[q, p, nn.AdaptiveLogSoftmaxWithLoss(3, 6, [3])])
        else:  # a false test_loss: the training loss, as Pixyz's `if test_loss:`
            model = Model(loss, test_loss=kind, distributions=[q, p])
        return [model.train({"x": x.clone()}), model.train({"x": x.clone()}), model.test({"x": x.clone()}),
                [t.detach().clone() for t in model.distributions.parameters()]]
    return program


@pytest.mark.parametrize("kind", ["loss set later", "a torch module with a log_prob method", 0, False],
                         ids=["loss set later", "log_prob module", "test_loss=0", "test_loss=False"])
def test_model_construction_variants_pixyz_accepts(kind: Any) -> None:
    assert_same(*run_both(_model_program(kind)))


def test_a_model_without_loss_says_to_set_one() -> None:
    from pyro_dgm.distributions import Normal
    from pyro_dgm.models import Model
    p = Normal(loc="z", scale=1.0, var=["x"], cond_var=["z"])
    model = Model(None, distributions=[torch.nn.Linear(1, 1), p])
    for call in (model.train, model.test, model.fit):
        with pytest.raises(TypeError, match="built with loss=None .* call set_loss\\(loss\\) first"):
            call({"x": torch.zeros(2, 1), "z": torch.zeros(2, 1)})
