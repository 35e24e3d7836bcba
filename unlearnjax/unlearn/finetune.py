"""Catastrophic forgetting by fine-tuning, CF (Goel §3.2 (2), A.2 (2)).

Continues the original recipe A on S_tr \\ S_f from M_o, all layers, for a
budget of steps (Goel: 1000 of 4000, i.e. 25%), with a fresh optimiser state
and the recipe's warm-up and linear decay over the budget.
"""

from __future__ import annotations

import dataclasses

import jax

from unlearnjax import training
from unlearnjax.unlearn.base import Method, UnlearnTask, single


@dataclasses.dataclass(frozen=True)
class FinetuneHparams:
  budget_fraction: float = 0.25


def unlearn(task: UnlearnTask, hparams: FinetuneHparams, key: jax.Array):
  recipe = task.recipe.scaled(hparams.budget_fraction)
  return training.fit(task.model, recipe, task.train, key, indices=task.retain,
                      variables=task.original, what='finetune',
                      curve=task.curve)


METHOD = Method('finetune', unlearn, FinetuneHparams, single(FinetuneHparams))
