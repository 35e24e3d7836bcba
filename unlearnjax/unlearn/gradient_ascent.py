"""Gradient ascent on the forget set, GA (Graves et al. 2021, as Jang et al.
2022 implement it; Pawelczyk A.2.3; SPEC.md, Methods "GA").

Mini-batch steps on −Ê_{(x,y)∈S_f}[CE], i.e. ascent on the forget loss, from
M_o for `budget_fraction` of the recipe's steps; batches come from S_f only
(drawn with replacement when S_f is smaller than a batch). BatchNorm runs in
training mode, so its running statistics follow the forget batches.

Learning rate: Pawelczyk uses "the hyperparameters of GD" with a rate of
5e-6 or 1e-5 against GD's 1e-3, i.e. 0.005 or 0.01 × GD's. GD here runs at the
recipe's rate, so `learning_rate_scale` defaults to 0.01 and the grid
searches {0.005, 0.01} × the recipe's rate. Ascent is unbounded: a budget
long enough diverges, which raises FloatingPointError.
"""

from __future__ import annotations

import dataclasses

import jax

from unlearnjax.unlearn import budgeted
from unlearnjax.unlearn.base import Method, UnlearnTask

PAWELCZYK_LEARNING_RATE_SCALES = (0.005, 0.01)   # 5e-6, 1e-5 over GD's 1e-3


@dataclasses.dataclass(frozen=True)
class GradientAscentHparams:
  budget_fraction: float = 0.05
  learning_rate_scale: float = 0.01   # × the recipe's learning rate


def unlearn(task: UnlearnTask, hparams: GradientAscentHparams, key: jax.Array):
  recipe = budgeted.budget_recipe(task, hparams.budget_fraction,
                                  hparams.learning_rate_scale)
  return budgeted.run(
      task, recipe, task.original,
      [budgeted.Part(task.forget, -1.0, budgeted.key_rng(key))],
      what='gradient_ascent')


def pawelczyk_grid(task: UnlearnTask) -> list[GradientAscentHparams]:
  del task
  return [GradientAscentHparams(learning_rate_scale=s)
          for s in PAWELCZYK_LEARNING_RATE_SCALES]


METHOD = Method('gradient_ascent', unlearn, GradientAscentHparams,
                pawelczyk_grid)
