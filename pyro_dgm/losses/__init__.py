"""The Loss API: loss terms built from distributions, combined with arithmetic, evaluated with ``.eval``.

Every loss is also a :class:`pyro.infer.ELBO`, so it trains through ``pyro.infer.SVI`` as well as through our Model
API.
"""
from pyro_dgm.losses.adversarial import AdversarialLoss
from pyro_dgm.losses.adversarial_divergences import (AdversarialJensenShannon, AdversarialJSDivergence,
                                                     AdversarialKullbackLeibler, AdversarialWassersteinDistance)
from pyro_dgm.losses.base import Loss
from pyro_dgm.losses.divergences import (AnalyticalKullbackLeibler, CrossEntropy, Divergence, Entropy,
                                         KullbackLeibler)
from pyro_dgm.losses.elbo import ELBO, IWELBO, LogMarginal
from pyro_dgm.losses.expectation import REINFORCE, E, Expectation, StochasticReconstructionLoss
from pyro_dgm.losses.iteration import IterativeLoss
from pyro_dgm.losses.mmd import MMD
from pyro_dgm.losses.operators import (AbsLoss, AddLoss, BatchMean, BatchSum, Detach, DivLoss, LossOperator,
                                       LossSelfOperator, MaxLoss, MinLoss, MulLoss, NegLoss, PowLoss, SubLoss)
from pyro_dgm.losses.pdf import NLL, LogProb, Prob
from pyro_dgm.losses.pyro_elbo import PyroELBO
from pyro_dgm.losses.similarity import MultiModalContrastivenessLoss, SimilarityLoss
from pyro_dgm.losses.special import ConstantVar, Parameter, ValueLoss
from pyro_dgm.losses.wasserstein import WassersteinDistance

__all__ = ["Loss", "LogProb", "Prob", "NLL", "Expectation", "E", "REINFORCE", "StochasticReconstructionLoss",
           "IterativeLoss", "MMD", "WassersteinDistance", "PyroELBO", "KullbackLeibler", "Entropy",
           "CrossEntropy", "ELBO", "IWELBO", "LogMarginal", "ValueLoss", "Parameter", "ConstantVar",
           "LossOperator", "LossSelfOperator", "AddLoss", "SubLoss", "MulLoss", "DivLoss", "PowLoss", "MinLoss",
           "MaxLoss", "NegLoss", "AbsLoss", "BatchMean", "BatchSum", "Detach", "AdversarialLoss",
           "AdversarialJensenShannon", "AdversarialJSDivergence", "AdversarialKullbackLeibler",
           "AdversarialWassersteinDistance", "SimilarityLoss", "MultiModalContrastivenessLoss", "Divergence",
           "AnalyticalKullbackLeibler", "DataParalleledLoss"]

# Pixyz's divergence terms derive from Divergence; ours are registered as its virtual subclasses (isinstance works)
for _term in (MMD, WassersteinDistance, AdversarialLoss):
    Divergence.register(_term)
del _term


def __getattr__(name: str) -> object:
    # DataParalleledLoss lives with the Model API's distributed helpers (pyro_dgm.models.distributed), which import
    # this package: it is loaded on first use, as Pixyz's ``from pixyz.losses import DataParalleledLoss`` asks
    if name == "DataParalleledLoss":
        from pyro_dgm.models.distributed import DataParalleledLoss

        return DataParalleledLoss
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# Pixyz's module paths, reachable as attributes of the package as there (pixyz.losses.losses.Parameter)
from pyro_dgm.losses import adversarial_loss, entropy, losses  # noqa: E402,F401
