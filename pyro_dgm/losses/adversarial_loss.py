"""Pixyz's module ``pixyz.losses.adversarial_loss``: the adversarial divergences (see :mod:`.adversarial` and
:mod:`.adversarial_divergences`).

Examples
--------
>>> from pyro_dgm.losses.adversarial_loss import AdversarialJensenShannon, AdversarialLoss, Divergence
>>> issubclass(AdversarialJensenShannon, AdversarialLoss), issubclass(AdversarialLoss, Divergence)
(True, True)
"""
from pyro_dgm.losses.adversarial import AdversarialLoss
from pyro_dgm.losses.adversarial_divergences import (AdversarialJensenShannon, AdversarialKullbackLeibler,
                                                     AdversarialWassersteinDistance)
from pyro_dgm.losses.divergences import Divergence
from pyro_dgm.utils import detach_dict, get_dict_values  # noqa: F401  (helpers Pixyz's module namespace has)

__all__ = ["AdversarialLoss", "AdversarialJensenShannon", "AdversarialKullbackLeibler",
           "AdversarialWassersteinDistance", "Divergence"]
