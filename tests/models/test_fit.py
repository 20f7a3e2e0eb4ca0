"""Model.fit: data forms, the history and its terms, callbacks, progress bar, TensorBoard, NaN/inf detection."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
from dgm_model_helpers import Classifier, digits, make_ml, make_vae
from torch.utils.data import DataLoader, Dataset, TensorDataset

from pyro_dgm.distributions import Normal
from pyro_dgm.models import ML, Model, NonFiniteLossError
from pyro_dgm.models.callbacks import ModelCheckpoint, SampleGrid


def _data(n: int = 60) -> dict[str, torch.Tensor]:
    x, y = digits()
    return {"x": x[:n], "y": y[:n]}


def test_history_is_row_weighted_mean_of_the_steps() -> None:
    data = _data(50)
    model = make_ml()
    twin = make_ml()
    twin.distributions.load_state_dict(model.distributions.state_dict())
    history = model.fit(data, epochs=2, batch_size=20, shuffle=False, test_data=data, progress=False)
    expected = []
    for _ in range(2):  # the same steps by hand: batches of 20, 20, 10 rows
        losses = [twin.train({k: v[s:s + 20] for k, v in data.items()}) for s in (0, 20, 40)]
        expected.append(float((20 * losses[0] + 20 * losses[1] + 10 * losses[2]) / 50))
    assert history["epoch"] == [1, 2]
    assert history["train_loss"] == pytest.approx(expected, rel=1e-6)
    assert history["train/\\log p(y|x)"] == pytest.approx([-v for v in expected], rel=1e-6)
    assert history["test_loss"][-1] == pytest.approx(float(twin.test(data)), rel=1e-6)
    assert model.epoch == 2 and model.step == 6
    again = model.fit(data, epochs=1, batch_size=25, progress=False)  # epochs count on across calls
    assert again["epoch"] == [3] and model.history["epoch"] == [1, 2, 3]


def test_every_data_form_gives_the_same_steps() -> None:
    data = _data(40)
    init = make_ml().distributions.state_dict()

    class Rows(Dataset):
        def __len__(self) -> int:
            return 40

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"x": data["x"][i], "y": data["y"][i]}

    forms = {
        "dict": data,
        "dataset": Rows(),
        "loader of dicts": DataLoader(Rows(), batch_size=10),
        "list of dicts": [{k: v[s:s + 10] for k, v in data.items()} for s in range(0, 40, 10)],
    }
    results = {}
    for name, form in forms.items():
        model = make_ml()
        model.distributions.load_state_dict(init)
        results[name] = model.fit(form, epochs=2, batch_size=10, shuffle=False, progress=False)["train_loss"]
    first = results["dict"]
    for name, losses in results.items():
        assert losses == pytest.approx(first, rel=1e-6), name
    # tuples of tensors (TensorDataset) are matched to loss.input_var in order
    model = make_ml()
    assert model.loss_cls.input_var == ["y", "x"]
    model.distributions.load_state_dict(init)
    tuples = DataLoader(TensorDataset(data["y"], data["x"]), batch_size=10)
    assert model.fit(tuples, epochs=2, progress=False)["train_loss"] == pytest.approx(first, rel=1e-6)
    # a bare tensor, for a loss with one input variable
    class P(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"])
            self.loc = torch.nn.Parameter(torch.zeros(64))

        def forward(self):  # type: ignore[no-untyped-def]
            return {"loc": self.loc, "scale": torch.ones(64)}

    p = P()
    one = Model((-p.log_prob()).mean(), distributions=[p])
    assert len(one.fit(data["x"], epochs=1, batch_size=20, progress=False)["train_loss"]) == 1
    assert float(p.loc.detach().abs().sum()) > 0


def test_bad_data_gives_clear_errors() -> None:
    model = make_ml()
    constant = Model((-Normal(loc=0.0, scale=1.0, var=["x"]).log_prob()).mean(), distributions=[Classifier()])
    with pytest.raises(RuntimeError, match="does not depend on the trained parameters"):
        constant.train({"x": torch.zeros(2, 1)})
    with pytest.raises(TypeError, match="iterator, which is used up after one epoch"):
        model.fit(iter([_data(10)]), epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"holds 1 tensor\(s\) but the loss takes the variables \['y', 'x'\]"):
        model.fit([digits()[0][:10]], epochs=1, progress=False)
    with pytest.raises(ValueError, match="different numbers of rows"):
        model.fit({"x": digits()[0][:10], "y": digits()[1][:9]}, epochs=1, progress=False)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        model.fit(_data(10), batch_size=0, progress=False)
    with pytest.raises(ValueError, match="gave no batch in epoch 1"):
        model.fit([], epochs=1, progress=False)
    with pytest.raises(TypeError, match="callbacks must be callables"):
        model.fit(_data(10), callbacks=["plot"], progress=False)


class _PoisonedBatches:
    """Batches of (x, y, w); the third batch of all (epoch 2, step 3) has an infinite w."""

    def __init__(self) -> None:
        self.calls = 0

    def __len__(self) -> int:
        return 2

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for _ in range(2):
            self.calls += 1
            batch = dict(_data(10), w=torch.zeros(10, 1))
            if self.calls == 3:
                batch["w"][4] = math.inf
            yield batch


def test_non_finite_loss_stops_naming_epoch_step_and_term() -> None:
    clf = Classifier()
    prior = Normal(loc=0.0, scale=1.0, var=["w"], name="r")
    loss = (-clf.log_prob()).mean().named("nll") + (-prior.log_prob()).mean().named("penalty")
    model = Model(loss, distributions=[clf])
    data = _PoisonedBatches()
    with pytest.raises(NonFiniteLossError, match=r"at epoch 2, step 3 \(non-finite term\(s\): 'penalty'\)") as err:
        model.fit(data, epochs=3, progress=False)
    assert "'nll'" not in str(err.value)
    assert model.step == 2 and model.epoch == 1  # the bad step changed nothing
    assert all(torch.isfinite(p).all() for p in clf.parameters())
    with pytest.raises(NonFiniteLossError, match=r"training loss is inf at step 3 \(non-finite term\(s\): 'penalty'"):
        model.train(dict(_data(10), w=torch.full((10, 1), -math.inf)))  # outside fit: no epoch in the message


def test_callbacks_sample_grid_checkpoint_and_stop(tmp_path: Path) -> None:
    model = make_vae()
    decoder = model.distributions[1]
    prior = Normal(loc=torch.zeros(4), scale=torch.ones(4), var=["z"], name="p_{prior}")
    grid = SampleGrid(decoder * prior, image_shape=(8, 8), batch_n=6, nrow=3, path_prefix=str(tmp_path / "g"))
    calls: list[tuple[int, float]] = []

    def stop_after_two(m: Model, epoch: int, logs: dict[str, Any]) -> None:
        calls.append((epoch, logs["train_loss"]))
        m.stop_training = epoch == 2

    ckpt = ModelCheckpoint(str(tmp_path / "m_{epoch}.pt"))
    history = model.fit(_data(40), epochs=5, batch_size=20, callbacks=[grid, ckpt, stop_after_two], progress=False)
    assert [e for e, _ in calls] == [1, 2] and history["epoch"] == [1, 2]
    assert calls[1][1] == history["train_loss"][1]
    assert [e for e, _ in grid.grids] == [1, 2] and grid.grids[0][1].shape == (16, 24)
    assert 0 <= float(grid.grids[0][1].min()) and float(grid.grids[0][1].max()) <= 1  # Bernoulli means
    assert (tmp_path / "g2.png").exists() and (tmp_path / "m_2.pt").exists()
    fresh = make_vae()
    fresh.load(tmp_path / "m_2.pt", resume=True)
    assert fresh.epoch == 2


def test_progress_bar_shows_the_running_loss(capsys: pytest.CaptureFixture[str]) -> None:
    make_ml().fit(_data(40), epochs=1, batch_size=20, progress=True)
    err = capsys.readouterr().err
    assert "epoch 1" in err and "loss=" in err


def test_tensorboard_logging_or_clean_skip(tmp_path: Path) -> None:
    model = make_ml()
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.warns(RuntimeWarning, match="tensorboard is not installed"):
            history = model.fit(_data(20), epochs=1, log_dir=tmp_path / "tb", progress=False)
        assert history["epoch"] == [1]
    else:  # pragma: no cover - depends on the environment
        model.fit(_data(20), epochs=1, log_dir=tmp_path / "tb", progress=False)
        assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_ml_with_other_distributions_trains_them_all() -> None:
    torch.manual_seed(0)
    main, extra = Classifier(), Classifier()
    model = ML(main, other_distributions=[extra], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.5})
    assert len(model.parameters()) == 4 and [d for d in model.distributions][1] is extra
    # one optimizer holds every parameter of every distribution (Pixyz: distributions.parameters())
    held = {id(prm) for group in model.optimizer.param_groups for prm in group["params"]}
    assert held == {id(prm) for prm in list(main.parameters()) + list(extra.parameters())}
    data = _data()
    # the step follows SGD's rule w <- w - lr * dL/dw, with L = mean(-log p(y|x)) computed here by hand
    w0, b0 = main.net.weight.detach().clone(), main.net.bias.detach().clone()
    extra0 = [prm.detach().clone() for prm in extra.parameters()]
    w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    nll = -(torch.log_softmax(data["x"] @ w.T + b, -1) * data["y"]).sum(-1).mean()
    gw, gb = torch.autograd.grad(nll, [w, b])
    first = model.train(data)
    assert torch.allclose(first, nll.detach(), atol=1e-5)
    assert torch.allclose(main.net.weight, w0 - 0.5 * gw, atol=1e-6)
    assert torch.allclose(main.net.bias, b0 - 0.5 * gb, atol=1e-6)
    # the extra classifier is not in the loss: no gradient, so SGD leaves it as it was
    assert all(torch.equal(a, b) for a, b in zip(extra.parameters(), extra0))
    for _ in range(20):
        model.train(data)
    assert float(model.test(data)) < 0.5 * float(first)


def test_fit_takes_numpy_integers_one_callback_and_a_numpy_array() -> None:
    import numpy as np
    seen = []
    data = torch.randn(8, 64).clamp(0, 1)
    histories = []
    for epochs, batch_size, callbacks, train in ((2, 4, [lambda m, e, logs: seen.append(e)], data),
                                                 (np.int64(2), np.int64(4), lambda m, e, logs: seen.append(e),
                                                  data.numpy())):
        torch.manual_seed(0)
        model = make_vae()
        histories.append(model.fit(train, epochs=epochs, batch_size=batch_size, callbacks=callbacks,
                                   progress=False, shuffle=False)["train_loss"])
    assert histories[0] == histories[1] and seen == [1, 2, 1, 2]
    for bad in (True, 1.5, "2"):
        with pytest.raises(ValueError, match="fit: epochs must be a non-negative integer"):
            make_vae().fit(data, epochs=bad, progress=False)


def test_fit_warns_that_batch_size_does_not_apply_to_a_loader() -> None:
    batches = [{"x": torch.rand(5, 64)} for _ in range(2)]
    with pytest.warns(UserWarning, match="batch_size=2 applies to a dict of tensors.*list, whose batches are used"):
        history = make_vae().fit(batches, batch_size=2, progress=False)
    assert len(history["train_loss"]) == 1


def test_a_loss_that_is_not_one_number_is_refused_naming_its_shape() -> None:
    from pyro_dgm.distributions import Normal
    from pyro_dgm.models import Model
    class P(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["y"])
            self.net = torch.nn.Linear(1, 1)

        def forward(self, y):  # type: ignore[no-untyped-def]
            loc = self.net(y)
            return {"loc": loc, "scale": torch.ones_like(loc)}

    p = P()
    model = Model(-p.log_prob(), distributions=[p])  # no .mean(): one value per row
    before = p.net.weight.detach().clone()
    with pytest.raises(ValueError, match=r"Model: the training loss .* has shape \(3,\); it must be one number.*"
                                         r"loss\.mean\(\) or loss\.sum\(\)"):
        model.train({"x": torch.zeros(3, 1), "y": torch.ones(3, 1)})
    assert torch.equal(p.net.weight, before)
