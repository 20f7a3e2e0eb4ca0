"""pyro_dgm's effect handlers. Networks run through the ``"dgm_params"`` effect (see
:data:`pyro_dgm.distributions.base.run_network`), which the memoizing handler of the performance issue answers."""
