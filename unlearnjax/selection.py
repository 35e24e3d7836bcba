"""Hyper-parameter search with Goel's selection score (Goel §3.2).

Every configuration of a method's grid is run; the one with the best
½·validation accuracy + ½·share of S_f whose prediction changed is kept.
Only the validation split and S_f are read, never the test set.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from unlearnjax import metrics, training
from unlearnjax.unlearn.base import Method, UnlearnTask, as_unlearned
from unlearnjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Selected:
  variables: training.Variables
  hparams: Any
  score: float
  validation_accuracy: float
  forget_changed: float
  num_tried: int
  num_diverged: int = 0
  info: dict = dataclasses.field(default_factory=dict)  # the method's own


def select_with_goel_score(method: Method, task: UnlearnTask, key: jax.Array,
                           grid=None) -> Selected:
  """Runs `method` over its grid (or `grid`) and keeps the best by Goel score."""
  grid = list(method.grid(task) if grid is None else grid)
  if not grid:
    raise ConfigError(f'{method.name}: empty hyper-parameter grid')
  forget_images = task.train.images[task.forget]
  original_forget = training.predict(task.model, task.original, forget_images)
  best, diverged = None, []
  for hparams in grid:
    # Every configuration gets the same key: differences are the hparams'.
    try:
      output = as_unlearned(method.unlearn(task, hparams, key))
    except FloatingPointError as e:  # a diverging configuration loses
      diverged.append(f'{hparams}: {e}')
      continue
    variables = output.variables
    val_acc = training.accuracy(task.model, variables, task.validation)
    changed = metrics.changed_share(
        original_forget, training.predict(task.model, variables, forget_images))
    score = metrics.goel_selection_score(val_acc, changed)
    if best is None or score > best.score:
      best = Selected(variables, hparams, score, val_acc, changed, len(grid),
                      info=output.info)
  if best is None:
    raise FloatingPointError(
        f'{method.name}: every configuration of its grid diverged; the first: '
        f'{diverged[0]}')
  return dataclasses.replace(best, num_diverged=len(diverged))
