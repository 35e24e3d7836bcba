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
  for hparams, output in zip(grid, _outputs(method, task, key, grid)):
    if isinstance(output, FloatingPointError):  # a diverging one loses
      diverged.append(f'{hparams}: {output}')
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


def _outputs(method: Method, task: UnlearnTask, key: jax.Array, grid):
  """Per configuration, its `Unlearned` or the `FloatingPointError` it
  diverged with. Every configuration gets the same key: differences are the
  hparams'. A grid runs together where the method can (`Method.
  unlearn_many`, the same numbers); else one configuration at a time,
  each computed only when the loop asks for it."""
  if method.unlearn_many is not None and len(grid) > 1 and task.curve is None:
    for output in method.unlearn_many(task, grid, key):
      yield (output if isinstance(output, FloatingPointError)
             else as_unlearned(output))
    return
  for hparams in grid:
    try:
      yield as_unlearned(method.unlearn(task, hparams, key))
    except FloatingPointError as e:
      yield e
