"""NegGrad+ (Kurmanji et al. 2023; Pawelczyk A.2.7; SPEC.md, Methods
"NegGrad+").

From M_o, minimise β · Ê_retain[CE] − (1 − β) · Ê_{S_f}[CE]: every optimiser
step takes one batch of the recipe's size from the retain set and one from
S_f (with replacement when S_f is smaller), forwarded in that order with
BatchNorm in training mode, as in Kurmanji's code. The budget counts
optimiser steps (`budget_fraction` of the recipe's), each of which reads two
batches.

Pawelczyk: "similar hyperparameters as GD and GA" with β = 0.999
(`retain_weight`); the learning rate is GD's (the recipe's, scale 1.0).
For the same key the retain batches are GD's, so β = 1 retraces GD's
parameters.
"""

from __future__ import annotations

import dataclasses

import jax

from unlearnjax.unlearn import budgeted
from unlearnjax.unlearn.base import Method, UnlearnTask, single


@dataclasses.dataclass(frozen=True)
class NegGradPlusHparams:
  budget_fraction: float = 0.05
  learning_rate_scale: float = 1.0   # × the recipe's learning rate
  retain_weight: float = 0.999       # Kurmanji's / Pawelczyk's β


def unlearn(task: UnlearnTask, hparams: NegGradPlusHparams, key: jax.Array):
  init_key, retain_rng = budgeted.fit_keys(key)
  recipe = budgeted.budget_recipe(task, hparams.budget_fraction,
                                  hparams.learning_rate_scale)
  beta = hparams.retain_weight
  return budgeted.run(
      task, recipe, task.original,
      [budgeted.Part(task.retain, beta, retain_rng),
       budgeted.Part(task.forget, -(1.0 - beta), budgeted.key_rng(init_key))],
      what='neggrad_plus')


METHOD = Method('neggrad_plus', unlearn, NegGradPlusHparams,
                single(NegGradPlusHparams))
