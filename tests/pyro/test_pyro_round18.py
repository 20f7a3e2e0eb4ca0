"""pyro_dgm joints as Pyro models against plain-Pyro twins: given values and the data plate's rows (probes p133,
p134, p136-p138; p133 generated random models and their plain-Pyro twins).

- One example of a variable that has parents, given without its batch dim (shape ``(D,)``, its features) by data or
  by ``poutine.condition``, was read as ``D`` data rows: the model opened ``pyro.plate("data", D)``, drew every latent
  ``D`` times and scored the one example ``D`` times (a plain-Pyro model scores it once). When only such values give
  the plate's rows, the call is now refused, naming the variable and the batch dim it needs; with that dim the model
  is its twin. One example beside values that do have the rows is broadcast, as in Pixyz and plain Pyro.
- Pyro's bare "Shape mismatch inside plate" at a pyro_dgm site now names the distribution, the variable and a fix.
- A guide sizes its data plate from the values it reads, as a model does: a guide that reads none of the data (a
  global latent's ``q(w)``) draws global sites, whatever else ``SVI`` hands it; inside a plate of the caller's, its
  draws are per row (the twin of a constant guide for per-row latents).
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from torch import nn

from pyro_dgm.distributions import Deterministic, Normal
from pyro_dgm.utils.checks import ShapeError

Z, D = 2, 3


class _Lin(Normal):
    """``var`` ~ N(fc(``cond``), 1), of D features."""

    def __init__(self, fc: nn.Module, var: str = "x", cond: str = "z") -> None:
        super().__init__(var=[var], cond_var=[cond], name="p")
        self.fc, self._cond = fc, cond

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": self.fc(inputs[self._cond]), "scale": torch.ones(D)}


class _Tanh(Deterministic):
    """h = tanh(fc(z))."""

    def __init__(self, fc: nn.Module) -> None:
        super().__init__(var=["h"], cond_var=["z"], name="f")
        self.fc = fc

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"h": torch.tanh(self.fc(z))}


def _prior(n: int = Z) -> Normal:
    """p(z) = N(0, I) of ``n`` features."""
    return Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[n], name="p")


def _joint(fc: nn.Module):
    return _Lin(fc) * _prior()


def _twin(fc: nn.Module, rows: int | None):
    def model(x: torch.Tensor | None = None) -> None:
        if rows is None:  # one example: no plate
            z = pyro.sample("z", dist.Normal(torch.zeros(1, Z), 1.).to_event(1))
            pyro.sample("x", dist.Normal(fc(z), 1.).to_event(1), obs=x)
            return
        with pyro.plate("data", rows):
            z = pyro.sample("z", dist.Normal(torch.zeros(Z), 1.).expand([rows, Z]).to_event(1))
            pyro.sample("x", dist.Normal(fc(z), 1.).to_event(1), obs=x)
    return model


def _log_prob_sum(model, seed: int = 0, **data) -> float:
    pyro.set_rng_seed(seed)
    return float(poutine.trace(model).get_trace(**data).log_prob_sum().detach())


@pytest.mark.parametrize("how", ["data", "condition"])
def test_one_example_of_a_variable_with_parents_without_its_batch_dim_is_refused_naming_it(how: str) -> None:
    torch.manual_seed(0)
    p = _joint(nn.Linear(Z, D))
    x = torch.tensor([0.1, -0.2, 0.3])  # one example of x's 3 features, no batch dim
    run = (lambda: p.model(x=x)) if how == "data" else (lambda: poutine.condition(p.model, data={"x": x})())
    with pytest.raises(ShapeError, match=r"p\(x\|z\).*'x' has shape \(3,\).*3 data rows.*feature shape \(3,\)"
                                         r".*x\[None\]"):
        poutine.trace(run).get_trace()


@pytest.mark.parametrize("how", ["data", "condition"])
def test_with_its_batch_dim_the_one_example_scores_as_the_plain_pyro_model(how: str) -> None:
    torch.manual_seed(0)
    fc = nn.Linear(Z, D)
    p = _joint(fc)
    x = torch.tensor([[0.1, -0.2, 0.3]])
    ours = (_log_prob_sum(p.model, x=x) if how == "data" else
            _log_prob_sum(poutine.condition(p.model, data={"x": x})))
    ref = _log_prob_sum(_twin(fc, None), x=x)
    assert ours == pytest.approx(ref, rel=1e-6)
    pyro.set_rng_seed(0)
    tr = poutine.trace(p.model).get_trace(x=x)
    assert tr.nodes["z"]["value"].shape == (1, Z)  # one draw of the latent, in no plate
    assert not tr.nodes["z"]["cond_indep_stack"]


def test_a_one_dim_batch_of_scalars_still_sizes_the_data_plate() -> None:
    """x of scalar features: shape (N,) is N rows (Pixyz's convention), as in the twin with its plate of N."""
    n = 4
    p = Normal(loc="z", scale=1., var=["x"], cond_var=["z"], name="p") * Normal(loc=0., scale=1., var=["z"],
                                                                              name="p")

    def twin(x: torch.Tensor) -> None:
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Normal(torch.zeros(n), 1.))
            pyro.sample("x", dist.Normal(z, 1.), obs=x)

    x = torch.linspace(-1., 1., n)
    assert _log_prob_sum(p.model, x=x) == pytest.approx(_log_prob_sum(twin, x=x), rel=1e-6)
    pyro.set_rng_seed(0)
    assert poutine.trace(p.model).get_trace(x=x).nodes["z"]["value"].shape == (n,)


def test_one_example_beside_one_dim_values_that_give_the_rows_is_broadcast_as_in_plain_pyro() -> None:
    """x of 3 features given once, y and z (scalar features) of 3 rows each: the rows are theirs and x is scored
    against each, as Pixyz's get_log_prob and the twin broadcast it (probe p134)."""
    torch.manual_seed(0)
    fc = nn.Linear(1, D)

    class PX(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = fc

        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loc": self.fc(z[..., None]), "scale": torch.ones(())}

    p = (PX() * Normal(loc="z", scale=1., var=["y"], cond_var=["z"], name="p")
         * Normal(loc=0., scale=1., var=["z"], name="p"))
    x, y, z = torch.randn(D), torch.randn(3), torch.randn(3)

    def twin(x: torch.Tensor | None = None, y: torch.Tensor | None = None, z: torch.Tensor | None = None) -> None:
        with pyro.plate("data", 3):
            z = pyro.sample("z", dist.Normal(0., 1.).expand([3]), obs=z)
            pyro.sample("x", dist.Normal(fc(z[..., None]), 1.).to_event(1), obs=x)
            pyro.sample("y", dist.Normal(z, 1.), obs=y)

    ref = _log_prob_sum(twin, x=x, y=y, z=z)
    assert _log_prob_sum(p.model, x=x, y=y, z=z) == pytest.approx(ref, rel=1e-6)
    assert float(p.get_log_prob({"x": x, "y": y, "z": z}).sum()) == pytest.approx(ref, rel=1e-6)
    ours = _log_prob_sum(poutine.condition(p.model, data={"x": x}), y=y)
    assert ours == pytest.approx(_log_prob_sum(poutine.condition(twin, data={"x": x}), y=y), rel=1e-6)


def test_one_example_with_two_feature_dims_or_beside_a_one_row_value_is_refused() -> None:
    """x with parents, one example of its feature shape (2, 3) given as such, or of (3,) beside z of one row: its
    dim 0 alone would size the plate (probe p134)."""
    torch.manual_seed(0)
    fc = nn.Linear(Z, D)

    class PX2(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = fc

        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            loc = self.fc(z)[..., None, :].expand(*z.shape[:-1], 2, D)
            return {"loc": loc, "scale": torch.ones(2, D)}

    prior = _prior()
    with pytest.raises(ShapeError, match=r"'x' has shape \(2, 3\).*2 data rows.*feature shape \(2, 3\)"):
        poutine.trace((PX2() * prior).model).get_trace(x=torch.zeros(2, D))
    with pytest.raises(ShapeError, match=r"'x' has shape \(3,\).*3 data rows"):
        poutine.trace(_joint(fc).model).get_trace(x=torch.zeros(D), z=torch.zeros(1, Z))
    # with the batch dim, one row: the twin's
    x = torch.randn(1, D)
    assert (_log_prob_sum(_joint(fc).model, x=x, z=torch.zeros(1, Z))
            == pytest.approx(_log_prob_sum(poutine.condition(_twin(fc, None), data={"z": torch.zeros(1, Z)}), x=x),
                             rel=1e-6))


class _QW(Normal):
    """q(w): a global latent's guide of learnable constants (a network without inputs)."""

    def __init__(self) -> None:
        super().__init__(var=["w"], name="q")
        self.loc = nn.Parameter(torch.zeros(D))
        self.log_scale = nn.Parameter(torch.zeros(D))

    def forward(self) -> dict[str, torch.Tensor]:
        return {"loc": self.loc[None], "scale": self.log_scale.exp()[None]}  # one row of D features


def test_a_guide_that_reads_no_data_draws_a_global_latent_and_trains_as_its_twin() -> None:
    """SVI hands the guide the model's data (x of 8 rows), which q(w) does not read: one global draw of w."""
    x = torch.randn(8, D) + 1.5

    def model(x: torch.Tensor) -> None:
        w = pyro.sample("w", dist.Normal(torch.zeros(D), 1.).to_event(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(w, 1.).to_event(1), obs=x)

    def train(guide, params) -> list[float]:
        pyro.clear_param_store()
        pyro.set_rng_seed(1)
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
        return [svi.step(x=x) for _ in range(10)] + [p.detach().clone() for p in params()]

    q = _QW()
    pyro.set_rng_seed(0)
    tr = poutine.trace(q.guide).get_trace(x=x)
    assert tr.nodes["w"]["value"].shape == (1, D) and not tr.nodes["w"]["cond_indep_stack"]

    def twin_guide(x: torch.Tensor) -> None:
        loc = pyro.param("loc", torch.zeros(D))
        log_scale = pyro.param("log_scale", torch.zeros(D))
        pyro.sample("w", dist.Normal(loc, log_scale.exp()).to_event(1))

    ours = train(q.guide, lambda: [q.loc, q.log_scale])
    ref = train(twin_guide, lambda: [pyro.param("loc"), pyro.param("log_scale")])
    for a, b in zip(ours, ref):
        torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), rtol=1e-5, atol=1e-6)


def test_a_guide_that_reads_no_data_inside_the_callers_plate_draws_per_row_as_its_twin() -> None:
    torch.manual_seed(0)
    fc = nn.Linear(Z, D)
    p = _joint(fc)
    q = Normal(loc=torch.tensor(0.5), scale=torch.tensor(0.8), var=["z"], features_shape=[Z], name="q")
    x = torch.randn(4, D)

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            q.guide(x=x)

    def twin_guide(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.full((Z,), .5), .8).expand([x.shape[0], Z]).to_event(1))

    pyro.set_rng_seed(0)
    ours = Trace_ELBO().loss(p.model, guide, x=x)
    pyro.set_rng_seed(0)
    ref = Trace_ELBO().loss(_twin(fc, 4), twin_guide, x=x)
    assert ours == pytest.approx(ref, rel=1e-6)


def test_a_deterministic_output_that_does_not_fit_the_plate_is_named_and_one_row_is_shared_as_in_plain_pyro() -> None:
    """h = f(z) given as one vector of 3 features beside x of 4 rows: Pyro's bare "Shape mismatch inside plate"
    named neither the distribution nor the fix (probe p134); as one row, h[None], it is the twin's shared value."""
    torch.manual_seed(0)
    f_fc, x_fc = nn.Linear(Z, D), nn.Linear(D, D)
    p = _Lin(x_fc, cond="h") * _Tanh(f_fc) * _prior()
    x, h = torch.randn(4, D), torch.randn(D)
    with pytest.raises(ShapeError, match=r"f\(h\|z\): the variable 'h' does not fit the plates.*shape \(3,\)"
                                         r".*h\[None\].*Shape mismatch inside plate"):
        poutine.trace(p.model).get_trace(x=x, h=h)

    def twin(x: torch.Tensor, h: torch.Tensor) -> None:
        with pyro.plate("data", 4):
            pyro.sample("z", dist.Normal(torch.zeros(Z), 1.).expand([4, Z]).to_event(1))
            h = pyro.deterministic("h", h)
            pyro.sample("x", dist.Normal(x_fc(h), 1.).to_event(1), obs=x)

    assert _log_prob_sum(p.model, x=x, h=h[None]) == pytest.approx(_log_prob_sum(twin, x=x, h=h), rel=1e-6)


# ---------------------------------------------------------------------------------------------- probe p136


@pytest.mark.needs_validation
def test_class_indices_at_a_conditional_one_hot_site_still_name_f_one_hot_not_a_missing_batch_dim() -> None:
    """y = [0, 2, 1] (3 labels of 3 classes) has the event shape (3,) by coincidence: the one-example check must
    leave integer values to the one-hot check (porting.md: NotOneHotError naming F.one_hot)."""
    from pyro_dgm.distributions import Categorical
    from pyro_dgm.utils.checks import NotOneHotError

    class PY(Categorical):
        def __init__(self) -> None:
            super().__init__(var=["y"], cond_var=["z"], name="p")
            self.fc = nn.Linear(Z, 3)

        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"probs": self.fc(z).softmax(-1)}

    p = PY() * _prior()
    y = torch.tensor([0, 2, 1])
    for run in (lambda: p.model(y=y), lambda: poutine.condition(p.model, data={"y": y})()):
        with pytest.raises(NotOneHotError, match=r"F\.one_hot"):
            poutine.trace(run).get_trace().log_prob_sum()


def test_a_global_site_of_the_callers_gives_no_rows_so_one_example_beside_it_is_refused() -> None:
    """mu, a plain-Pyro global latent of shape (3,), fed to p(x|mu) beside one example x of shape (3,): x alone
    sized a plate of 3 (scored 3 times); refused, and x[None] is the twin."""
    p = Normal(loc="mu", scale=torch.tensor(1.), var=["x"], cond_var=["mu"], name="p")

    def ours(x: torch.Tensor) -> None:
        mu = pyro.sample("mu", dist.Normal(torch.zeros(D), 1.).to_event(1))
        p.model(x=x, mu=mu)

    def twin(x: torch.Tensor) -> None:
        mu = pyro.sample("mu", dist.Normal(torch.zeros(D), 1.).to_event(1))
        pyro.sample("x", dist.Normal(mu, 1.).to_event(1), obs=x)

    x = torch.tensor([0.1, -0.2, 0.3])
    with pytest.raises(ShapeError, match=r"'x' has shape \(3,\).*x\[None\]"):
        poutine.trace(ours).get_trace(x)
    assert _log_prob_sum(ours, x=x[None]) == pytest.approx(_log_prob_sum(twin, x=x), rel=1e-6)


def test_a_deterministic_output_whose_network_drops_the_batch_dim_is_told_to_keep_it() -> None:
    class F(_Tanh):
        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"h": torch.tanh(self.fc(z)).mean(0)}  # the batch averaged away

    p = (Normal(loc="h", scale=1., var=["x"], cond_var=["h"], name="p") * F(nn.Linear(Z, D))
         * _prior())
    with pytest.raises(ShapeError, match=r"f\(h\|z\): the variable 'h'.*forward\(\) computed, has shape \(3,\)"
                                         r".*keep the batch dim in forward\(\)"):
        poutine.trace(p.model).get_trace(x=torch.randn(4, D))


def test_posterior_samples_without_a_row_dim_for_sequential_predictive_are_named_with_their_shape() -> None:
    """Predictive(parallel=False) conditions p(x|z)p(z|w)p(w) on each sample z[i] of shape (2,): one example of z,
    which sized a plate of 2 (before: torch's reshape error); refused naming the (S, 1, 2) shape, with which the
    draws are the plain-Pyro twin's under the same seed."""
    from pyro.infer import Predictive

    torch.manual_seed(0)
    fc = nn.Linear(Z, D)
    p = (_Lin(fc) * Normal(loc="w", scale=torch.tensor(1.), var=["z"], cond_var=["w"], name="p")
         * Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["w"], features_shape=[Z], name="p"))

    def twin() -> None:
        w = pyro.sample("w", dist.Normal(torch.zeros(1, Z), 1.).to_event(1))
        z = pyro.sample("z", dist.Normal(w, 1.).to_event(1))
        pyro.sample("x", dist.Normal(fc(z), 1.).to_event(1))

    z = torch.randn(5, Z)
    with pytest.raises(ShapeError, match=r"'z' has shape \(2,\).*Predictive: shape \(S, 1, 2\)"):
        Predictive(p.model, posterior_samples={"z": z}, parallel=False)()
    pyro.set_rng_seed(0)
    ours = Predictive(p.model, posterior_samples={"z": z[:, None]}, parallel=False)()["x"]
    pyro.set_rng_seed(0)
    ref = Predictive(twin, posterior_samples={"z": z[:, None]}, parallel=False)()["x"]
    assert ours.shape == (5, 1, D)
    torch.testing.assert_close(ours, ref)


# ---------------------------------------------------------------------------------------------- probe p137


def test_two_values_of_one_example_each_give_no_rows_either() -> None:
    """x and y (3 features each) given once each beside z of one row: before, the second value switched the check
    off and both were scored 3 times; refused, and with their batch dims the model is the twin."""
    torch.manual_seed(0)
    fx, fy = nn.Linear(Z, D), nn.Linear(Z, D)

    p = _Lin(fx) * _Lin(fy, "y") * _prior()
    x, y, z = torch.randn(D), torch.randn(D), torch.zeros(1, Z)
    with pytest.raises(ShapeError, match=r"'x' has shape \(3,\) \(and so is 'y' of shape \(3,\)\).*x\[None\]"):
        poutine.trace(p.model).get_trace(x=x, y=y, z=z)

    def twin(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> None:
        pyro.sample("z", dist.Normal(torch.zeros(1, Z), 1.).to_event(1), obs=z)
        pyro.sample("x", dist.Normal(fx(z), 1.).to_event(1), obs=x)
        pyro.sample("y", dist.Normal(fy(z), 1.).to_event(1), obs=y)

    assert (_log_prob_sum(p.model, x=x[None], y=y[None], z=z)
            == pytest.approx(_log_prob_sum(twin, x=x, y=y, z=z), rel=1e-6))


def test_one_example_of_integer_counts_is_refused_as_a_float_one_is() -> None:
    """A Bernoulli p(b|z) of 3 features given one example as a long tensor: scored 3 times before (a float one was
    refused); the same refusal now, and b[None] scores what get_log_prob gives."""
    from pyro_dgm.distributions import Bernoulli

    class PB(Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["b"], cond_var=["z"], name="p")
            self.fc = nn.Linear(Z, D)

        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"probs": torch.sigmoid(self.fc(z))}

    torch.manual_seed(0)
    p = PB() * _prior()
    b, z = torch.tensor([1, 0, 1]), torch.zeros(1, Z)
    for value in (b, b.float()):
        with pytest.raises(ShapeError, match=r"p\(b\|z\): the observed 'b' has shape \(3,\).*b\[None\]"):
            poutine.trace(p.model).get_trace(b=value, z=z)
    ref = float(p.get_log_prob({"b": b.float()[None], "z": z}).sum())
    assert _log_prob_sum(p.model, b=b[None], z=z) == pytest.approx(ref, rel=1e-6)


# ---------------------------------------------------------------------------------------------- probe p138


def test_one_example_is_named_before_a_later_factor_reads_it() -> None:
    """p(y|x,z)p(x|z)p(z) with x one example (3,): the check runs at x's site, so the user reads the one-example
    message, not the later network's failure on the misread rows."""

    class PY(Normal):
        def __init__(self) -> None:
            super().__init__(var=["y"], cond_var=["x", "z"], name="p")
            self.fc = nn.Linear(D + Z, 1)

        def forward(self, x: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loc": self.fc(torch.cat([x, z], -1)), "scale": torch.ones(1)}

    torch.manual_seed(0)
    p = PY() * _joint(nn.Linear(Z, D))
    with pytest.raises(ShapeError, match=r"p\(x\|z\): the observed 'x' has shape \(3,\).*x\[None\]"):
        poutine.trace(p.model).get_trace(x=torch.randn(D))


def test_a_deterministic_output_given_as_one_example_counts_as_one() -> None:
    """h = f(z) and x ~ p(x|h), both given once as (3,) through poutine.condition: before, h (recorded by
    pyro.deterministic) was never looked at and x was scored 3 times; refused, naming both."""
    torch.manual_seed(0)
    p = _Lin(nn.Linear(D, D), cond="h") * _Tanh(nn.Linear(D, D)) * _prior(D)
    x, h = torch.randn(D), torch.randn(D)
    with pytest.raises(ShapeError, match=r"'x' has shape \(3,\) \(and so is 'h' of shape \(3,\)\)"):
        poutine.trace(poutine.condition(p.model, data={"h": h, "x": x})).get_trace()
