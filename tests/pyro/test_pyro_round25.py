"""Twenty-fifth round on the Pyro side (probe p265): a model and guide called inside a user's outer plate whose size
happens to be the batch size, and a model given its data under a keyword that names no variable; against plain-Pyro
twins of the same model.
"""
from __future__ import annotations

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch import nn

from pyro_dgm.distributions import Normal

Z = 2


class Q(Normal):
    def __init__(self, d: int) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.fc = nn.Linear(d, 2 * Z)

    def forward(self, x):  # type: ignore[no-untyped-def]
        h = self.fc(x)
        return {"loc": h[..., :Z], "scale": nn.functional.softplus(h[..., Z:]) + 0.1}


class P(Normal):
    def __init__(self, d: int) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.fc = nn.Linear(Z, d)

    def forward(self, z):  # type: ignore[no-untyped-def]
        return {"loc": self.fc(z), "scale": torch.ones(self.fc.out_features)}


def _vae(d: int) -> tuple[Q, P, Normal]:
    torch.manual_seed(0)
    prior = Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["z"], features_shape=[Z], name="p_{prior}")
    return Q(d), P(d), prior


def _twins(q: Q, p: P) -> tuple:
    def model(x):  # type: ignore[no-untyped-def]
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], Z), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(p.fc(z), 1.0).to_event(1), obs=x)

    def guide(x):  # type: ignore[no-untyped-def]
        h = q.fc(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(h[..., :Z], nn.functional.softplus(h[..., Z:]) + 0.1).to_event(1))

    return model, guide


@pytest.mark.parametrize("d", [1, 4])
@pytest.mark.parametrize("k", [3, 5])
def test_an_outer_plate_the_size_of_the_batch_is_a_plate_of_copies_as_in_plain_pyro(d: int, k: int) -> None:
    """``pyro.plate("outer", K, dim=-2)`` around the model and guide of 5 rows: K copies of the 5-row model. With
    K = 5 the data's rows were read as the copies: one z shared by the rows (d = 1, the ELBO of another model) or a
    ShapeError (d = 4)."""
    q, p, prior = _vae(d)
    joint = p * prior
    model, guide = _twins(q, p)
    torch.manual_seed(1)
    x = torch.randn(5, d)
    zc = torch.linspace(-1, 1, k * 5 * Z).reshape(k, 5, Z)
    results = []
    for m, g in ((model, guide), (joint.model, q.guide)):
        with pyro.plate("outer", k, dim=-2):
            mt = poutine.trace(poutine.condition(m, {"z": zc})).get_trace(x)
            gt = poutine.trace(poutine.condition(g, {"z": zc})).get_trace(x)
        mt.compute_log_prob()
        results.append((mt.log_prob_sum(), gt.log_prob_sum(), mt.nodes["x"]["log_prob"].shape,
                        mt.nodes["z"]["log_prob"].shape))
    (m0, g0, xs0, zs0), (m1, g1, xs1, zs1) = results
    assert (xs1, zs1) == (xs0, zs0) == ((k, 5), (k, 5))
    torch.testing.assert_close(m1, m0)
    torch.testing.assert_close(g1, g0)


def test_free_draws_in_an_outer_plate_the_size_of_the_batch_give_the_plain_pyro_elbo() -> None:
    q, p, prior = _vae(1)
    joint = p * prior
    model, guide = _twins(q, p)
    x = torch.randn(5, 1)
    elbos = []
    for m, g in ((model, guide), (joint.model, q.guide)):
        torch.manual_seed(3)
        with pyro.plate("outer", 5, dim=-2):
            gt = poutine.trace(g).get_trace(x)
            mt = poutine.trace(poutine.replay(m, trace=gt)).get_trace(x)
        assert gt.nodes["z"]["value"].shape == (5, 5, Z)  # one z per copy and row
        elbos.append(mt.log_prob_sum() - gt.log_prob_sum())
    torch.testing.assert_close(elbos[1], elbos[0])


def test_data_of_one_row_broadcast_in_the_users_own_plates_still_broadcasts() -> None:
    """The user's own ``pyro.plate("data", 5, dim=-1)``, with x of (3, 1): one row per group, broadcast over the
    rows, as Pyro broadcasts it (only the rows of the model's own data plate are the data's)."""
    p = Normal(loc=torch.tensor(0.5), scale=torch.tensor(2.0), var=["x"])
    x = torch.randn(3, 1)

    def run(call):  # type: ignore[no-untyped-def]
        with pyro.plate("groups", 3, dim=-2), pyro.plate("data", 5, dim=-1):
            call(x)

    ours = poutine.trace(lambda: run(lambda v: p.model(x=v))).get_trace()
    twin = poutine.trace(lambda: run(lambda v: pyro.sample("x", dist.Normal(0.5, 2.0), obs=v))).get_trace()
    torch.testing.assert_close(ours.log_prob_sum(), twin.log_prob_sum())
    torch.testing.assert_close(ours.log_prob_sum(), torch.distributions.Normal(0.5, 2.0).log_prob(x).sum() * 5)


@pytest.mark.parametrize("keyword", ["data", "obs", "x_obs"])
def test_data_under_a_keyword_that_names_no_variable_warns_that_the_data_is_drawn(keyword: str) -> None:
    """A plain-Pyro model refuses ``model(data=x)`` (an unexpected keyword); ours drew x and trained on no data,
    silently. It warns now, naming the keyword and the variable; a tensor beside the data passes silently."""
    q, p, prior = _vae(4)
    joint = p * prior
    x = torch.randn(5, 4)
    with pytest.warns(UserWarning, match=rf"p\(x,z\): the keyword '{keyword}' names no variable of this model \(its "
                                         r"variables: \['x', 'z'\]\); \['x'\] not given, so drawn, not observed "
                                         r"\(give the data by its variable's name: x=\.\.\.\)"):
        tr = poutine.trace(joint.model).get_trace(**{keyword: x})
    assert not tr.nodes["x"]["is_observed"]  # (what the warning says)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tr = poutine.trace(joint.model).get_trace(x=x, idx=torch.arange(5))  # (a guide's extra input)
        assert tr.nodes["x"]["is_observed"]
        poutine.trace(joint.model).get_trace(annealing=0.5)  # (a number: not data)
        poutine.trace(q.guide).get_trace(x=x, idx=torch.arange(5))  # (a guide draws its variables)


@pytest.mark.parametrize("dim, b, k, d", [(-2, 5, 5, 5), (-2, 3, 3, 3), (-2, 2, 2, 2), (-3, 3, 2, 3)])
def test_data_whose_feature_size_is_the_batch_size_in_an_outer_plate_keeps_its_features(dim, b, k, d) -> None:
    """Probe p266: x of (B, D) with D = B, inside an outer plate and the model's own data plate: its features were
    read as the data plate's dim (z of event dim 0, a wrong log-density; or a ShapeError). The plain-Pyro twin's
    numbers and shapes, for the guide and the ELBO."""
    q, p, prior = _vae(d)
    joint = p * prior
    model, guide = _twins(q, p)
    x = torch.randn(b, d)
    out = []
    for m, g in ((model, guide), (joint.model, q.guide)):
        torch.manual_seed(3)
        with pyro.plate("outer", k, dim=dim):
            gt = poutine.trace(g).get_trace(x)
            mt = poutine.trace(poutine.replay(m, trace=gt)).get_trace(x)
        gt.compute_log_prob()
        out.append((gt.nodes["z"]["value"].shape, gt.nodes["z"]["log_prob"].shape, gt.log_prob_sum(),
                    mt.log_prob_sum()))
    assert out[1][:2] == out[0][:2]
    torch.testing.assert_close(out[1][2], out[0][2])
    torch.testing.assert_close(out[1][3], out[0][3])


@pytest.mark.parametrize("z_features", [4, 3])
def test_a_conditionals_input_whose_feature_size_is_the_batch_size_is_scored_once(z_features: int) -> None:
    """Probe p266: ``p(x|z).model(x=x, z=z)`` inside a plate at dim -3, x carrying the plate's dims and z (4, 4)
    only rows and features: z's features were read as the data plate's dim, and x scored 16 times (-415.0 where
    the twin gives -25.9)."""
    torch.manual_seed(0)
    lin = nn.Linear(z_features, 1)

    class Cond(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = lin

        def forward(self, z):  # type: ignore[no-untyped-def]
            return {"loc": self.fc(z), "scale": torch.ones(1)}

    ours = Cond()
    x, z = torch.randn(4, 1, 4, 1), torch.randn(4, z_features)

    def twin() -> None:
        with pyro.plate("data", 4, dim=-1):
            pyro.sample("x", dist.Normal(lin(z), 1.0).to_event(1), obs=x)

    def run(f):  # type: ignore[no-untyped-def]
        with pyro.plate("g", 4, dim=-3):
            f()

    got = poutine.trace(lambda: run(lambda: ours.model(x=x, z=z))).get_trace()
    want = poutine.trace(lambda: run(twin)).get_trace()
    got.compute_log_prob()
    want.compute_log_prob()
    assert got.nodes["x"]["log_prob"].shape == want.nodes["x"]["log_prob"].shape == (4, 1, 4)
    torch.testing.assert_close(got.log_prob_sum(), want.log_prob_sum())


@pytest.mark.parametrize("k, b, dim", [(3, 3, -2), (3, 4, -2), (2, 3, -3), (1, 4, -2)])
def test_a_scalar_variables_data_in_an_outer_plate_is_scored_once(k: int, b: int, dim: int) -> None:
    """Probe p268: ``Normal(loc=0.5, scale=2., var=["x"]).model(x=x)`` with x of (K, B) (or (K, 1, B) at dim -3)
    inside an outer plate of K: a variable of scalar constants takes its features from the data, so the dims after
    the copies' are rows, as in the plain-Pyro twin (the rows were read as K rows of B features and scored K times,
    or refused when K != B)."""
    p = Normal(loc=torch.tensor(0.5), scale=torch.tensor(2.0), var=["x"])
    x = torch.randn((k, b) if dim == -2 else (k, 1, b))

    def run(f):  # type: ignore[no-untyped-def]
        with pyro.plate("outer", k, dim=dim):
            f()

    got = poutine.trace(lambda: run(lambda: p.model(x=x))).get_trace()
    want = poutine.trace(lambda: run(lambda: pyro.sample("x", dist.Normal(0.5, 2.0), obs=x))).get_trace()
    closed = torch.distributions.Normal(0.5, 2.0).log_prob(x).sum()
    torch.testing.assert_close(want.log_prob_sum(), closed)
    torch.testing.assert_close(got.log_prob_sum(), closed)


def test_a_guides_extra_input_beside_a_missing_modality_does_not_warn() -> None:
    """Probe p268: a multimodal model trained on x alone (y missing: a latent here) given a guide's extra tensor
    (``svi.step(x=x, weight=w)``) warned that the data was drawn; some data is given, so it does not."""
    torch.manual_seed(0)
    prior = Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["z"], features_shape=[Z], name="p_{prior}")
    px = P(3)

    class PY(Normal):
        def __init__(self) -> None:
            super().__init__(var=["y"], cond_var=["z"], name="p")
            self.fc = nn.Linear(Z, 2)

        def forward(self, z):  # type: ignore[no-untyped-def]
            return {"loc": self.fc(z), "scale": torch.ones(2)}

    joint = px * PY() * prior
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tr = poutine.trace(joint.model).get_trace(x=torch.randn(5, 3), weight=torch.ones(5))
    assert tr.nodes["x"]["is_observed"] and not tr.nodes["y"]["is_observed"]
    with pytest.warns(UserWarning, match=r"the keyword 'data' names no variable of this model .*\['x', 'y'\] not "
                                         r"given, so drawn"):
        poutine.trace(joint.model).get_trace(data=torch.randn(5, 3))
