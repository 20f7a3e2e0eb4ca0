"""A subclass's own ``get_log_prob`` / ``sample`` in Pyro model and guide runs, against plain-Pyro twins (round 12).

Pixyz's graph calls each factor's public ``sample`` and ``get_log_prob``, so ``get_log_prob``, ``sample`` and the
losses follow a subclass that overrides them (a tempered likelihood, a clamped draw). ``joint.model`` and
``q.guide`` did not: an observed site was scored by the family's density, an unobserved variable was drawn by the
family's sampler, so SVI optimized another objective than the Pixyz-side loss; and a distribution without a family
(its own ``sample`` and ``get_log_prob`` only) could not run as a Pyro model at all, even with every value given.
Now a site of such a factor is scored by the class's ``get_log_prob`` and an unobserved one is drawn by its
``sample``, as a plain-Pyro model with a custom distribution (or ``poutine.scale``, ``pyro.factor``) does.
"""
from __future__ import annotations

import warnings
from typing import Any

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from pyro.infer.reparam import LocScaleReparam
from torch import nn

from pyro_dgm.distributions import Categorical, Distribution, MixtureModel, Normal, TransformedDistribution
from pyro_dgm.flows import PlanarFlow
from pyro_dgm.losses import LogProb

N, D = 4, 2


def _prior() -> Normal:
    return Normal(var=["z"], loc=torch.tensor(0.0), scale=torch.tensor(1.0), features_shape=[D], name="p_z")


class Tempered(Normal):
    """A tempered likelihood, 0.25 log N(x; dec(z), 1), written the Pixyz way."""

    def __init__(self, dec: nn.Module) -> None:
        super().__init__(var=["x"], cond_var=["z"], scale=torch.tensor(1.0), name="p")
        self.dec = dec

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": self.dec(z)}

    def get_log_prob(self, x_dict: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        return 0.25 * super().get_log_prob(x_dict, *args, **kwargs)


class Encoder(Normal):
    def __init__(self, enc: nn.Module) -> None:
        super().__init__(var=["z"], cond_var=["x"], scale=torch.tensor(0.5), name="q")
        self.enc = enc

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": self.enc(x)}


class ClampedEncoder(Encoder):
    """q(z|x) whose draws are clamped to [-0.1, 0.1]; its density stays the Normal's."""

    def sample(self, x_dict: Any = {}, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:  # noqa: B006
        out = super().sample(x_dict, *args, **kwargs)
        out["z"] = out["z"].clamp(-0.1, 0.1)
        return out


class ClampedNormal(dist.Normal):
    """The plain-Pyro twin of a clamped sampler: a custom distribution whose draws are clamped."""

    def rsample(self, sample_shape: Any = torch.Size()) -> torch.Tensor:
        return super().rsample(sample_shape).clamp(-0.1, 0.1)


class Shift(Distribution):
    """x = z + 1, with an unnormalized Gaussian density: no family, only sample and get_log_prob."""

    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")

    def sample(self, x_dict: Any = {}, batch_n: Any = None, sample_shape: Any = torch.Size(),  # noqa: B006
               return_all: bool = True, reparam: bool = False, **kwargs: Any) -> dict[str, torch.Tensor]:
        out = {"x": x_dict["z"] + 1.0}
        return {**x_dict, **out} if return_all else out

    def get_log_prob(self, x_dict: Any, sum_features: bool = True, feature_dims: Any = None,
                     **kwargs: Any) -> torch.Tensor:
        return -((x_dict["x"] - x_dict["z"] - 1.0) ** 2).sum(-1)


def _shift_log_density(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return -((x - z - 1.0) ** 2).sum(-1)


def _nets() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    return nn.Linear(D, D), nn.Linear(D, D)


def _sample_sites(tr: Any) -> dict[str, Any]:
    return {n: s for n, s in tr.nodes.items() if s["type"] == "sample"}


# ---------------------------------------------------------------------- a family with its own get_log_prob
def test_a_tempered_likelihood_is_scored_by_its_get_log_prob_in_a_pyro_trace() -> None:
    dec, _ = _nets()
    joint = Tempered(dec) * _prior()
    x, z = torch.randn(N, D), torch.randn(N, D)

    def twin(x: torch.Tensor, z: torch.Tensor) -> None:
        with pyro.plate("data", N):
            zz = pyro.sample("z", dist.Normal(0.0, 1.0).expand([N, D]).to_event(1), obs=z)
            with poutine.scale(scale=0.25):
                pyro.sample("x", dist.Normal(dec(zz), 1.0).to_event(1), obs=x)

    ours = poutine.trace(joint.model).get_trace(x=x, z=z)
    ref = poutine.trace(twin).get_trace(x, z)
    ours.compute_log_prob()
    ref.compute_log_prob()
    for name in ("x", "z"):
        torch.testing.assert_close(ours.nodes[name]["log_prob"], ref.nodes[name]["log_prob"])
    torch.testing.assert_close(ours.log_prob_sum(), ref.log_prob_sum())
    torch.testing.assert_close(ours.log_prob_sum(), LogProb(joint).eval({"x": x, "z": z}).sum())
    # the prior has no override: its site is the family's, as before
    assert type(ours.nodes["z"]["fn"]) is dist.Independent and ours.nodes["z"]["value"] is z


@pytest.mark.parametrize("particles", [1, 3], ids=["one_particle", "vectorized_particles"])
def test_svi_on_a_tempered_model_gives_the_plain_pyro_loss_and_gradients(particles: int) -> None:
    dec, enc = _nets()
    joint, q = Tempered(dec) * _prior(), Encoder(enc)
    x = torch.randn(N, D)

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", N):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([N, D]).to_event(1))
            with poutine.scale(scale=0.25):
                pyro.sample("x", dist.Normal(dec(z), 1.0).to_event(1), obs=x)

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", N):
            pyro.sample("z", dist.Normal(enc(x), 0.5).to_event(1))

    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1)
    params = [*dec.parameters(), *enc.parameters()]
    got = []
    for m, g in ((joint.model, q.guide), (model, guide)):
        pyro.set_rng_seed(1)
        loss = elbo.differentiable_loss(m, g, x)
        got.append((loss, torch.autograd.grad(loss, params)))
    torch.testing.assert_close(got[0][0], got[1][0])
    for a, b in zip(got[0][1], got[1][1]):
        torch.testing.assert_close(a, b)


def test_an_enumerated_prior_with_its_own_get_log_prob_is_summed_out_as_in_plain_pyro() -> None:
    probs, locs = torch.tensor([0.2, 0.3, 0.5]), torch.tensor([[-1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])

    class TemperedCategorical(Categorical):
        def get_log_prob(self, x_dict: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
            return 0.5 * super().get_log_prob(x_dict, *args, **kwargs)

    class Emission(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["y"], scale=torch.tensor(1.0), name="p")

        def forward(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loc": y @ locs}

    joint = Emission() * TemperedCategorical(var=["y"], probs=probs, infer={"enumerate": "parallel"}, name="p_y")

    def twin(x: torch.Tensor) -> None:
        with pyro.plate("data", N):
            y = pyro.sample("y", dist.OneHotCategorical(probs), infer={"enumerate": "parallel"})
            pyro.factor("tempering", -0.5 * dist.OneHotCategorical(probs).log_prob(y))
            pyro.sample("x", dist.Normal(y @ locs, 1.0).to_event(1), obs=x)

    def no_guide(x: torch.Tensor) -> None:
        pass

    x = torch.randn(N, D)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    assert elbo.loss(joint.model, no_guide, x) == pytest.approx(elbo.loss(twin, no_guide, x), rel=1e-6)


def test_a_get_log_prob_that_does_not_give_one_value_per_row_is_refused_at_the_site() -> None:
    class Total(Normal):
        def get_log_prob(self, x_dict: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
            return super().get_log_prob(x_dict).sum()  # one number for the batch: Pyro would broadcast it

    joint = Total(var=["x"], cond_var=["z"], loc="z", scale=1.0, name="p") * _prior()
    tr = poutine.trace(joint.model).get_trace(x=torch.zeros(N, D), z=torch.zeros(N, D))
    with pytest.raises(ValueError, match=r"Total p\(x\|z\): get_log_prob\(\) of 'x' .* returned shape \(\); .* "
                                         r"shape \(4,\)"):
        tr.compute_log_prob()


# ---------------------------------------------------------------------- a family with its own sample
def test_an_unobserved_variable_is_drawn_by_the_class_sample_as_by_a_custom_pyro_distribution() -> None:
    _, enc = _nets()
    x = torch.randn(N, D)

    def twin(x: torch.Tensor) -> torch.Tensor:
        with pyro.plate("data", N):
            return pyro.sample("z", ClampedNormal(enc(x), 0.5).to_event(1))

    pyro.set_rng_seed(2)
    ours = poutine.trace(ClampedEncoder(enc).guide).get_trace(x=x)
    pyro.set_rng_seed(2)
    ref = poutine.trace(twin).get_trace(x)
    assert ours.nodes["z"]["value"].abs().max() <= 0.1
    torch.testing.assert_close(ours.nodes["z"]["value"], ref.nodes["z"]["value"])
    torch.testing.assert_close(ours.log_prob_sum(), ref.log_prob_sum())
    assert ours.nodes["_RETURN"]["value"]["z"] is ours.nodes["z"]["value"]
    # under a renaming, the site has the new name
    renamed = poutine.trace(ClampedEncoder(enc).replace_var(z="w").guide).get_trace(x=x)
    assert "w" in renamed.nodes and "z" not in renamed.nodes and renamed.nodes["w"]["value"].abs().max() <= 0.1


@pytest.mark.parametrize("particles", [1, 3], ids=["one_particle", "vectorized_particles"])
def test_svi_with_a_clamped_guide_gives_the_plain_pyro_loss_and_gradients(particles: int) -> None:
    dec, enc = _nets()
    joint, q = Normal(var=["x"], cond_var=["z"], loc="z", scale=1.0, name="p") * _prior(), ClampedEncoder(enc)
    x = torch.randn(N, D)

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", N):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([N, D]).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", N):
            pyro.sample("z", ClampedNormal(enc(x), 0.5).to_event(1))

    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1)
    got = []
    for m, g in ((joint.model, q.guide), (model, guide)):
        pyro.set_rng_seed(3)
        loss = elbo.differentiable_loss(m, g, x)
        got.append((loss, torch.autograd.grad(loss, list(enc.parameters()))))
    torch.testing.assert_close(got[0][0], got[1][0])
    for a, b in zip(got[0][1], got[1][1]):
        torch.testing.assert_close(a, b)


def test_a_value_that_a_handler_gives_is_not_redrawn_by_the_class_sample() -> None:
    _, enc = _nets()
    calls = []

    class Counted(ClampedEncoder):
        def sample(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
            calls.append(1)
            return super().sample(*args, **kwargs)

    q, x = Counted(enc), torch.randn(N, D)
    tr = poutine.trace(q.guide).get_trace(x=x)
    assert len(calls) == 1 and tr.nodes["z"]["value"].abs().max() <= 0.1
    given = torch.full((N, D), 0.5)
    state = torch.get_rng_state()
    replayed = poutine.trace(poutine.condition(q.guide, data={"z": given})).get_trace(x=x)
    assert len(calls) == 1 and torch.equal(torch.get_rng_state(), state)  # no draw: the value is the handler's
    assert replayed.nodes["z"]["value"] is given
    torch.testing.assert_close(replayed.log_prob_sum(), dist.Normal(enc(x), 0.5).to_event(1).log_prob(given).sum())


# ---------------------------------------------------------------------- a distribution without a family
def test_a_distribution_without_a_family_observes_given_values_scored_by_its_get_log_prob() -> None:
    _, enc = _nets()
    joint, q = Shift() * _prior(), Encoder(enc)
    x, z = torch.randn(N, D), torch.randn(N, D)
    tr = poutine.trace(joint.model).get_trace(x=x, z=z)
    assert tr.nodes["x"]["is_observed"]
    expected = _shift_log_density(x, z).sum() + dist.Normal(0.0, 1.0).log_prob(z).sum()
    torch.testing.assert_close(tr.log_prob_sum(), expected)

    def model(x: torch.Tensor) -> None:  # the plain-Pyro twin: a factor for the custom density
        with pyro.plate("data", N):
            zz = pyro.sample("z", dist.Normal(0.0, 1.0).expand([N, D]).to_event(1))
            pyro.factor("x", _shift_log_density(x, zz))

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", N):
            pyro.sample("z", dist.Normal(enc(x), 0.5).to_event(1))

    got = []
    for m, g in ((joint.model, q.guide), (model, guide)):
        pyro.set_rng_seed(4)
        loss = Trace_ELBO().differentiable_loss(m, g, x)
        got.append((loss, torch.autograd.grad(loss, list(enc.parameters()))))
    torch.testing.assert_close(got[0][0], got[1][0])
    for a, b in zip(got[0][1], got[1][1]):
        torch.testing.assert_close(a, b)


def test_an_unobserved_variable_of_a_distribution_without_a_family_is_a_latent_site_drawn_by_its_sample() -> None:
    child = Normal(var=["y"], cond_var=["x"], loc="x", scale=1.0, name="p_y")
    joint = child * Shift()
    z = torch.randn(N, D)
    tr = poutine.trace(joint.model).get_trace(z=z)
    site = tr.nodes["x"]
    assert not site["is_observed"] and site["fn"].batch_shape == (N,) and site["fn"].event_shape == (D,)
    torch.testing.assert_close(site["value"], z + 1.0)
    torch.testing.assert_close(site["fn"].log_prob(site["value"]), torch.zeros(N))
    given = torch.zeros(N, D)  # a value a handler gives: scored by get_log_prob, and the child is conditioned on it
    tr = poutine.trace(poutine.condition(joint.model, data={"x": given})).get_trace(z=z)
    torch.testing.assert_close(tr.nodes["x"]["fn"].log_prob(given), _shift_log_density(given, z))
    assert tr.nodes["x"]["value"] is given
    torch.testing.assert_close(tr.nodes["y"]["fn"].mean, given)


def test_a_distribution_that_cannot_be_a_site_says_what_to_do() -> None:
    class SampleOnly(Distribution):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")

        def sample(self, x_dict: Any = {}, *args: Any, return_all: bool = True,  # noqa: B006
                   **kwargs: Any) -> dict[str, torch.Tensor]:
            return {"x": x_dict["z"] + 1.0}

    class DensityOnly(Distribution):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")

        def get_log_prob(self, x_dict: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
            return -(x_dict["x"] - x_dict["z"]).pow(2).sum(-1)

    z = torch.zeros(N, D)
    with pytest.raises(NotImplementedError, match=r"SampleOnly p\(x\|z\): 'x' .*defines no get_log_prob\(\)"):
        poutine.trace((SampleOnly() * _prior()).model).get_trace(z=z)
    with pytest.raises(NotImplementedError, match=r"SampleOnly p\(x\|z\): 'x' .*defines no get_log_prob\(\)"):
        poutine.trace((SampleOnly() * _prior()).model).get_trace(x=z, z=z)
    with pytest.raises(NotImplementedError, match=r"DensityOnly p\(x\|z\): 'x' is not given .* no sample\(\) to draw "
                                                  r"it; give 'x' as data"):
        poutine.trace((DensityOnly() * _prior()).model).get_trace(z=z)
    tr = poutine.trace((DensityOnly() * _prior()).model).get_trace(x=z, z=z)  # given: a site scored by it
    torch.testing.assert_close(tr.nodes["x"]["fn"].log_prob(z), torch.zeros(N))


# ---------------------------------------------------------------------- batch dims that Pixyz's one batch dim lacks
class TemperedNormal(dist.Normal):
    """The plain-Pyro twin of a tempered likelihood: a custom distribution with its own log_prob."""

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return 0.25 * super().log_prob(value)


def test_a_tempered_child_of_an_enumerated_parent_is_scored_as_in_plain_pyro() -> None:
    locs = torch.tensor([[-1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])

    class Child(Normal):  # the parent's value is enumerated: (3, 1, 3) against x of (4, 2)
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["y"], scale=torch.tensor(1.0), name="p")

        def forward(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loc": y @ locs}

        def get_log_prob(self, x_dict: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
            return 0.25 * super().get_log_prob(x_dict, *args, **kwargs)

    probs = torch.tensor([0.2, 0.3, 0.5])
    joint = Child() * Categorical(var=["y"], probs=probs, infer={"enumerate": "parallel"}, name="p_y")

    def twin(x: torch.Tensor) -> None:
        with pyro.plate("data", N):
            y = pyro.sample("y", dist.OneHotCategorical(probs), infer={"enumerate": "parallel"})
            pyro.sample("x", TemperedNormal(y @ locs, 1.0).to_event(1), obs=x)

    def no_guide(x: torch.Tensor) -> None:
        pass

    x = torch.randn(N, D)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    assert elbo.loss(lambda x: joint.model(x=x), no_guide, x) == pytest.approx(elbo.loss(twin, no_guide, x), rel=1e-6)


def _tempered_given_global() -> Normal:
    class GivenGlobal(Normal):
        def get_log_prob(self, x_dict: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
            return 0.25 * super().get_log_prob(x_dict, *args, **kwargs)

    return GivenGlobal(var=["x"], cond_var=["z"], loc="z", scale=torch.tensor(1.0), name="p")


def _global_guide(x: torch.Tensor) -> None:
    pyro.sample("z", dist.Normal(torch.ones(D), 0.5).to_event(1))


def test_a_tempered_likelihood_of_a_global_latent_takes_vectorized_particles_as_plain_pyro() -> None:
    p, x = _tempered_given_global(), torch.randn(N, D)

    def model(x: torch.Tensor) -> None:  # z: (3, 1, 2) under the particles, x: (4, 2)
        p.model(x=x, z=pyro.sample("z", dist.Normal(torch.zeros(D), 1.0).to_event(1)))

    def twin(x: torch.Tensor) -> None:
        z = pyro.sample("z", dist.Normal(torch.zeros(D), 1.0).to_event(1))
        with pyro.plate("data", N):
            pyro.sample("x", TemperedNormal(z, 1.0).to_event(1), obs=x)

    elbo = Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)
    got = []
    for m in (model, twin):
        pyro.set_rng_seed(5)
        got.append(elbo.differentiable_loss(m, _global_guide, x))
    torch.testing.assert_close(got[0], got[1])


def test_a_clamped_child_of_a_global_latent_draws_vectorized_particles_as_plain_pyro() -> None:
    class Clamped(Normal):
        def sample(self, x_dict: Any = {}, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:  # noqa: B006
            out = super().sample(x_dict, *args, **kwargs)
            out["y"] = out["y"].clamp(-0.1, 0.1)
            return out

    clamped = Clamped(var=["y"], cond_var=["z"], loc="z", scale=torch.tensor(1.0), name="c")
    joint = Normal(var=["x"], cond_var=["y"], loc="y", scale=torch.tensor(1.0), name="p") * clamped

    def model(x: torch.Tensor) -> None:  # y drawn for z of (3, 1, 2) under the data plate: (3, 4, 2)
        joint.model(x=x, z=pyro.sample("z", dist.Normal(torch.zeros(D), 1.0).to_event(1)))

    def twin(x: torch.Tensor) -> None:
        z = pyro.sample("z", dist.Normal(torch.zeros(D), 1.0).to_event(1))
        with pyro.plate("data", N):
            y = pyro.sample("y", ClampedNormal(z, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(y, 1.0).to_event(1), obs=x)

    x = torch.randn(N, D)
    elbo = Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)
    got = []
    for m in (model, twin):
        pyro.set_rng_seed(6)
        got.append(elbo.differentiable_loss(m, _global_guide, x))
    torch.testing.assert_close(got[0], got[1])


# ---------------------------------------------------------------------- flows and mixtures: features scored together
def test_a_mixture_and_a_flow_with_their_own_get_log_prob_score_their_sites_without_warnings() -> None:
    class TemperedMixture(MixtureModel):
        def get_log_prob(self, x_dict: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
            return 0.5 * super().get_log_prob(x_dict, *args, **kwargs)

    class TemperedFlow(TransformedDistribution):
        def get_log_prob(self, x_dict: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
            return 0.5 * super().get_log_prob(x_dict, *args, **kwargs)

    probs, locs = torch.tensor([0.3, 0.7]), torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    comps = [Normal(var=["x"], loc=locs[k], scale=torch.ones(D), name=f"c{k}") for k in range(2)]
    mixture = TemperedMixture(comps, Categorical(var=["z"], probs=probs, name="p_z"))
    torch.manual_seed(0)
    flow = TemperedFlow(prior=Normal(var=["z"], loc=torch.zeros(D), scale=torch.ones(D), name="p_z"),
                        flow=PlanarFlow(D), var=["x"])
    x = torch.randn(N, D)
    twin = dist.MixtureSameFamily(dist.Categorical(probs), dist.Normal(locs, 1.0).to_event(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (the mixture warned that its features do not factorize, at every call)
        mixture_trace = poutine.trace(mixture.model).get_trace(x=x)
        flow_trace = poutine.trace(flow.model).get_trace(x=x)
        torch.testing.assert_close(mixture_trace.log_prob_sum(), 0.5 * twin.log_prob(x).sum())
        torch.testing.assert_close(flow_trace.log_prob_sum(), LogProb(flow).eval({"x": x}).sum())


# ---------------------------------------------------------------------- handlers that read the site's parameters
def test_a_site_with_its_own_get_log_prob_reads_the_family_parameters_and_refuses_a_reparameterizer() -> None:
    class TemperedPrior(Normal):
        def get_log_prob(self, x_dict: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
            return 0.25 * super().get_log_prob(x_dict, *args, **kwargs)

    prior = TemperedPrior(var=["z"], loc=torch.tensor(0.5), scale=torch.tensor(2.0), features_shape=[D], name="p_z")
    joint = Normal(var=["x"], cond_var=["z"], loc="z", scale=torch.tensor(1.0), name="p") * prior
    x = torch.randn(N, D)

    def twin(x: torch.Tensor) -> None:
        with pyro.plate("data", N):
            z = pyro.sample("z", TemperedNormal(torch.full((D,), 0.5), 2.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    fn, ref = (poutine.trace(m).get_trace(x).nodes["z"]["fn"] for m in (lambda x: joint.model(x=x), twin))
    torch.testing.assert_close(fn.loc, ref.base_dist.loc.expand(N, D))
    torch.testing.assert_close(fn.scale, ref.base_dist.scale.expand(N, D))
    # the twin's reparameterized site keeps its own density (type(fn)(loc=..., scale=...)); ours cannot: refused
    reparam = poutine.reparam(lambda x: joint.model(x=x), config={"z": LocScaleReparam(0.5)})
    with pytest.raises(NotImplementedError, match=r"TemperedPrior p_\{z\}\(z\): poutine.reparam .* site 'z' with "
                                                  r"LocScaleReparam.* own get_log_prob\(\).* leave 'z' out"):
        poutine.trace(reparam).get_trace(x)
