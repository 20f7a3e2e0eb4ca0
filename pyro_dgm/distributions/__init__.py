"""The Distribution API: distributions that wrap networks, multiply into joints, and run as Pyro models."""
from pyro_dgm.distributions.base import Distribution, sum_samples
from pyro_dgm.distributions.exponential import (Bernoulli, Beta, Categorical, Dirichlet, FactorizedBernoulli, Gamma,
                                                Laplace, Multinomial, Normal, RelaxedBernoulli, RelaxedCategorical)
from pyro_dgm.distributions.family import DistributionBase
from pyro_dgm.distributions.flow_distribution import (InverseTransformedDistribution, PlanarFlowDistribution, RealNVP,
                                                      RealNVPDistribution, TransformedDistribution)
from pyro_dgm.distributions.mixture import MixtureModel, MixtureOfNormal, PosteriorMixtureModel
from pyro_dgm.distributions.poe import ElementWiseProductOfNormal, NormalPoE, ProductOfNormal
from pyro_dgm.distributions.joint import MultiplyDistribution
from pyro_dgm.distributions.ops import MarginalizeVarDistribution, ReplaceVarDistribution
from pyro_dgm.distributions.special import (CustomLikelihoodDistribution, CustomProb, DataDistribution, Deterministic,
                                            EmpiricalDistribution)

__all__ = ["Distribution", "DistributionBase", "MultiplyDistribution", "ReplaceVarDistribution",
           "MarginalizeVarDistribution", "Normal", "Bernoulli", "RelaxedBernoulli", "FactorizedBernoulli",
           "Categorical", "RelaxedCategorical", "Multinomial", "Dirichlet", "Beta", "Laplace", "Gamma",
           "Deterministic", "EmpiricalDistribution", "DataDistribution", "CustomProb", "CustomLikelihoodDistribution",
           "sum_samples", "ProductOfNormal", "NormalPoE", "ElementWiseProductOfNormal", "MixtureOfNormal",
           "MixtureModel", "PosteriorMixtureModel", "TransformedDistribution", "InverseTransformedDistribution",
           "PlanarFlowDistribution", "RealNVPDistribution", "RealNVP"]

PlanarFlow = PlanarFlowDistribution  # the early reference's name, not in __all__ (flows.PlanarFlow is the flow)

# Pixyz's module paths, reachable as attributes of the package as there (pixyz.distributions.distributions.Distribution)
from pyro_dgm.distributions import (custom_distributions, distributions, exponential_distributions,  # noqa: E402,F401
                                    mixture_distributions, moe, special_distributions)
