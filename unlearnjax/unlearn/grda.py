"""Gradient Difference Ascent, GRDA: a remedial-learning baseline (RELOAD §4.3).

"GRDA calculates ∇L(D) − ∇L(D_new) on each step and performs a gradient
update in the opposite direction, fitting D_new." Every step takes one batch
of D (every training row as the model saw it) and one of D_new (the retain
rows, plus `task.corrected` for remedial learning) and moves
θ ← θ + η·(∇L_D − ∇L_new), i.e. it descends L_new − L_D, the direction of
RELOAD's priming step (Alg. 1 line 6) taken at every step. L is the batch-mean
cross-entropy, so on expectation (unlearning) the objective is
(|S_f|/|S_tr|)·(mean CE on D_new − mean CE on S_f).

One `budgeted.objective_step` per step with parts (D_new, +1), (D, −1),
forwarded in that order with BatchNorm in training mode; `budget_fraction`
of the recipe's steps (the paper: 10 epochs), each reading two batches; the
recipe's optimiser, warm-up and linear decay at `learning_rate_scale` × its
rate. GRDA reads D, so it is not blind.
"""

from __future__ import annotations

import dataclasses

import jax

from unlearnjax.unlearn import budgeted
from unlearnjax.unlearn import reload
from unlearnjax.unlearn.base import Method, UnlearnTask, single


@dataclasses.dataclass(frozen=True)
class GRDAHparams:
  budget_fraction: float = 0.05
  learning_rate_scale: float = 1.0    # × the recipe's learning rate


def unlearn(task: UnlearnTask, hparams: GRDAHparams, key: jax.Array):
  data = reload.new_data(task)
  new_key, data_rng = budgeted.fit_keys(key)
  recipe = budgeted.budget_recipe(task, hparams.budget_fraction,
                                  hparams.learning_rate_scale)
  return budgeted.run(
      reload.with_new_data(task, data), recipe, task.original,
      [budgeted.Part(data.new_rows, 1.0, budgeted.key_rng(new_key)),
       budgeted.Part(data.data_rows, -1.0, data_rng)],
      what='grda')


METHOD = Method('grda', unlearn, GRDAHparams, single(GRDAHparams),
                reads_corrected=True)
