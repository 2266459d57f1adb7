"""Mixture optimisation (issue #18): choose a mixture's group weights on evidence.

A swarm of mixtures is sampled around a prior (`swarm`), each trains a tiny proxy LM (`proxy`),
regressors map weights to each target's loss (`fit`) and the predicted optimum within the bounds
and epoch caps is proposed (`propose`). `search` holds the spec that drives it all.
"""
