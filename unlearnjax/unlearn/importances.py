"""I_D and I_f of a task, memoised across the runs of one original model.

The one place SSD (`ssd.py`) and PTN (`ptn.py`) get their importances. Every
value is memoised in the task's shared cache (`UnlearnTask.cached`), keyed by
the importance, its estimator, batch, shuffle key and rows, so a grid, a
found-fraction sweep and the methods of the SSD family share what they can.

Sharing across found fractions (issue 10): the `exact` estimator is a mean
over samples, so the retain set's is the training set's minus the forget
set's, counts weighted (`importance.retain_from_train`):

  I_{D_r} = (|S_tr|·I_{S_tr} − |S_f|·I_{S_f}) / (|S_tr| − |S_f|).

One pass over S_tr per original model then serves I_D over D_r for every
found fraction and every exact-estimator method (the authors' code
recomputes a retain pass per run); each run computes only its own, small,
I_f. Equal to a direct pass over D_r up to float32 rounding (the sums run in
another order; tested). The `per_batch` estimator is a mean over batches of
a nonlinear map of batch gradients, which does not decompose: it keeps one
pass per retain set, as the authors' code.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from unlearnjax import importance as importance_lib
from unlearnjax.unlearn.base import UnlearnTask, cache_key


@dataclasses.dataclass(frozen=True)
class Timed:
  """An importance tree; `seconds` it took to compute (for a value derived
  from the shared training-set pass: that pass plus the subtraction), the
  same on every cache hit; `spent` what this call spent (0 on a hit)."""
  value: object
  seconds: float
  spent: float
  shared: bool = False   # derived from the shared training-set pass


def _rows_key(key: jax.Array | None) -> str:
  if key is None:
    return ''
  return '/shuffle-' + ''.join(
      f'{v:08x}' for v in np.asarray(jax.random.key_data(key)).ravel())


def retain_is_complement(task: UnlearnTask) -> bool:
  """Whether D_r is exactly S_tr without S_f (what the subtraction needs)."""
  return (task.forget.size + task.retain.size == len(task.train)
          and np.unique(task.forget).size == task.forget.size)


def task_importances(task: UnlearnTask, *, importance: str, estimator: str,
                     batch_size: int, data: str, output_norm_power: float = 1.0,
                     shuffle_key: jax.Array | None = None
                     ) -> tuple[Timed, Timed]:
  """(I_D, I_f) for `task`: I_D over S_tr (`data='train'`) or D_r
  (`'retain'`); `shuffle_key` (per_batch only) shuffles the rows, split in
  two for D and S_f."""
  shuffled = estimator == 'per_batch' and shuffle_key is not None
  keys = tuple(jax.random.split(shuffle_key)) if shuffled else (None, None)
  tag = (f'importance/{importance}/w{float(output_norm_power)}/{estimator}/'
         f'{batch_size}{_rows_key(shuffle_key if shuffled else None)}')

  def compute(rows, key):
    def run():
      split = task.train if rows is None else task.train.subset(rows)
      start = time.perf_counter()
      value = importance_lib.parameter_importance(
          task.model, task.original, split.images, split.labels,
          importance=importance, estimator=estimator, batch_size=batch_size,
          output_norm_power=output_norm_power, shuffle_key=key)
      value = jax.block_until_ready(value)
      seconds = time.perf_counter() - start
      return Timed(value, seconds, seconds)
    return run

  def fetch(name, rows, run):
    hit = cache_key(name, rows) in task.cache
    out = task.cached(name, rows, run)
    return dataclasses.replace(out, spent=0.0) if hit else out

  forget = fetch(f'{tag}/f', task.forget, compute(task.forget, keys[1]))
  if data == 'train':
    return fetch(f'{tag}/D', None, compute(None, keys[0])), forget
  if estimator == 'exact' and retain_is_complement(task):
    def derive():
      train = fetch(f'{tag}/D', None, compute(None, None))
      start = time.perf_counter()
      value = importance_lib.retain_from_train(
          train.value, len(task.train), forget.value, task.forget.size)
      subtraction = time.perf_counter() - start
      # Spent: the subtraction, plus the training-set pass if this run was
      # the first to need it.
      return Timed(value, train.seconds + subtraction,
                   train.spent + subtraction, shared=True)
    return fetch(f'{tag}/D', task.retain, derive), forget
  return fetch(f'{tag}/D', task.retain, compute(task.retain, keys[0])), forget
