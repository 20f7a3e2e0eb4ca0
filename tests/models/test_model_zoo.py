"""VAE, VI and ML improve their objective on scikit-learn's digits (held-out rows), by stated margins."""
from __future__ import annotations

import torch
from dgm_model_helpers import Classifier, digits, digits_nets, make_ml, make_vae

from pyro_dgm.distributions import Normal
from pyro_dgm.models import VI


def _split() -> tuple[dict, dict]:
    x, y = digits()
    return {"x": x[:1400], "y": y[:1400]}, {"x": x[1400:], "y": y[1400:]}


def test_vae_improves_on_digits() -> None:
    train, test = _split()
    model = make_vae()
    before = float(model.test({"x": test["x"]}))
    assert 40 < before < 50  # about 64 log 2: a decoder that knows nothing
    history = model.fit({"x": train["x"]}, epochs=3, batch_size=100, test_data={"x": test["x"]}, progress=False)
    after = history["test_loss"][-1]
    assert after < before - 12  # -E[log p(x|z)] + KL drops from ~44 nats to under ~32
    kl = [k for k in history if k.startswith("test/D_{KL}")]
    assert len(kl) == 1 and 0 < history[kl[0]][-1] < after  # the KL term is logged and is a part of the loss


def test_vi_improves_on_digits() -> None:
    train, test = _split()
    q, p = digits_nets()
    prior = Normal(loc=torch.zeros(4), scale=torch.ones(4), var=["z"], name="p_{prior}")
    model = VI(p * prior, q, optimizer_params={"lr": 1e-2})
    before = float(model.test({"x": test["x"]}))
    model.fit({"x": train["x"]}, epochs=3, batch_size=100, progress=False)
    after = float(model.test({"x": test["x"]}))
    assert after < before - 12  # the negative ELBO, in nats per image


def test_ml_classifier_improves_on_digits() -> None:
    train, test = _split()
    model = make_ml()
    before = float(model.test(test))
    assert abs(before - torch.log(torch.tensor(10.0))) < 0.5  # about log 10 at the start
    model.fit(train, epochs=3, batch_size=100, progress=False)
    after = float(model.test(test))
    assert after < 0.6  # from about 2.3 nats
    clf: Classifier = model.distributions[0]
    with torch.no_grad():
        accuracy = (clf.net(test["x"]).argmax(-1) == test["y"].argmax(-1)).float().mean()
    assert accuracy > 0.85
