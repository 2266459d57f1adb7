"""Mixture optimisation (issue #18): choose a mixture's group weights on evidence.

A swarm of mixtures is sampled around a prior (`swarm`), each trains a tiny proxy LM (`proxy`) on its
token sample (a mixture build and an npy export, `steps`), regressors map weights to each target's loss
(`fit`) and the predicted optimum within the bounds and epoch caps is proposed (`propose`). `search` holds
the spec that drives it all; `run` is the composite (swarm -> fit -> propose -> rounds -> verify, resumable);
`results` writes the run's files, its summary and `materialize` (the proposal as a new mixture version);
`report` its plots and markdown; `cli_commands` the `optimize` command.
"""
