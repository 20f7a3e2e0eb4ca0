"""The Loss API: loss terms built from distributions, combined with arithmetic, evaluated with ``.eval``.

Every loss is also a :class:`pyro.infer.ELBO`, so it trains through ``pyro.infer.SVI`` as well as through our Model
API.
"""
from pyro_dgm.losses.adversarial import AdversarialLoss
from pyro_dgm.losses.adversarial_divergences import (AdversarialJensenShannon, AdversarialJSDivergence,
                                                     AdversarialKullbackLeibler, AdversarialWassersteinDistance)
from pyro_dgm.losses.base import Loss
from pyro_dgm.losses.divergences import CrossEntropy, Entropy, KullbackLeibler
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
           "AdversarialWassersteinDistance", "SimilarityLoss", "MultiModalContrastivenessLoss"]
