"""Gradient Ascent Relearn, GAR: a remedial-learning baseline (RELOAD §4.3).

"GAR performs 10 epochs of gradient ascent on D, followed by 10 epochs of
gradient descent on D_new." From M_o: `ascent_share` of the step budget
ascends the cross-entropy on D (every row of the training set as the model
saw it), then the rest descends it on D_new (the retain rows, plus
`task.corrected` for remedial learning); `budget_fraction` of the recipe's
steps in all, each phase with the recipe's optimiser, warm-up and linear
decay over its own steps (a fresh optimiser state per phase, as two separate
training loops). Both phases are `budgeted.run` with one part (weight −1,
then +1); BatchNorm in training mode.

GAR reads D, so it is not blind. Learning rates: the descent phase runs at
`learning_rate_scale` × the recipe's rate; the ascent at
`ascent_learning_rate_scale` × (default 0.01, this library's GA default).
The paper states neither rate. Ascent is unbounded: a long, fast one diverges,
which raises FloatingPointError.
"""

from __future__ import annotations

import dataclasses

import jax

from unlearnjax.unlearn import budgeted
from unlearnjax.unlearn import reload
from unlearnjax.unlearn.base import Method, UnlearnTask, single


@dataclasses.dataclass(frozen=True)
class GARHparams:
  budget_fraction: float = 0.1        # both phases / the recipe's steps
  ascent_share: float = 0.5           # share of the budget ascending on D
  learning_rate_scale: float = 1.0    # descent, × the recipe's learning rate
  ascent_learning_rate_scale: float = 0.01  # ascent, × the recipe's


def phase_steps(task: UnlearnTask, hparams: GARHparams) -> tuple[int, int]:
  """(ascent steps, descent steps): the budget split by `ascent_share`; a
  phase with a positive share takes at least one step."""
  total = hparams.budget_fraction * task.recipe.steps
  ascent = hparams.ascent_share * total
  descent = total - ascent
  as_steps = lambda x, share: max(1, int(round(x))) if share > 0 else 0
  return (as_steps(ascent, hparams.ascent_share),
          as_steps(descent, 1.0 - hparams.ascent_share))


def unlearn(task: UnlearnTask, hparams: GARHparams, key: jax.Array):
  if not 0.0 <= hparams.ascent_share <= 1.0:
    raise ValueError(f'ascent_share must be in [0, 1], got '
                     f'{hparams.ascent_share}')
  if hparams.budget_fraction <= 0:
    raise ValueError(f'budget_fraction must be > 0, got '
                     f'{hparams.budget_fraction}')
  data = reload.new_data(task)
  combined = reload.with_new_data(task, data)
  ascent_key, descent_key = jax.random.split(key)
  ascent_steps, descent_steps = phase_steps(task, hparams)
  variables = task.original
  if ascent_steps:
    recipe = dataclasses.replace(
        task.recipe, steps=ascent_steps,
        learning_rate=task.recipe.learning_rate
        * hparams.ascent_learning_rate_scale)
    variables = budgeted.run(
        combined, recipe, variables,
        [budgeted.Part(data.data_rows, -1.0, budgeted.key_rng(ascent_key))],
        what='gar/ascent')
  if descent_steps:
    recipe = dataclasses.replace(
        task.recipe, steps=descent_steps,
        learning_rate=task.recipe.learning_rate * hparams.learning_rate_scale)
    variables = budgeted.run(
        combined, recipe, variables,
        [budgeted.Part(data.new_rows, 1.0, budgeted.key_rng(descent_key))],
        what='gar/descent', curve_after=ascent_steps)
  return variables


METHOD = Method('gar', unlearn, GARHparams, single(GARHparams),
                reads_corrected=True)
