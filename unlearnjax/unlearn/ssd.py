"""Selective Synaptic Dampening, SSD (Foster et al. 2023 §3; Goel A.2 (3)).

Importances I_D over the retain set (the corrective-benchmark and Potion code;
Foster's `importance_data='train'` uses the whole training set, which bounds
every ratio I_f/I_D by |S_tr|/|S_f| and so turns larger thresholds into
no-ops) and I_f over S_f (diagonal empirical Fisher, `unlearnjax.importance`). Every parameter with I_f,i > τ·I_D,i
(strict; τ = `selection_threshold`) is multiplied by
β_i = min(λ·I_D,i / I_f,i, 1) (λ = `dampening_constant`); so I_D,i = 0 < I_f,i
zeroes it. No training. BatchNorm statistics are left as they are.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np

from unlearnjax import importance
from unlearnjax.unlearn.base import Method, UnlearnTask

# Goel A.2 (3): τ grid and λ as multiples of τ; 50 configurations.
GOEL_SELECTION_THRESHOLDS = (0.1, 1, 10, 50, 100, 500, 1000, 1e4, 1e5, 1e6)
GOEL_DAMPENING_MULTIPLIERS = (0.1, 0.5, 1, 5, 10)


@dataclasses.dataclass(frozen=True)
class SSDHparams:
  selection_threshold: float = 10.0   # Foster's α
  dampening_constant: float = 1.0     # Foster's λ
  estimator: str = 'exact'            # 'exact' (vmap) or 'per_batch'
  importance_batch_size: int = 512    # batch of the per-batch estimate
  importance_data: str = 'retain'     # I_D over 'retain' (the corrective-
                                      # benchmark code) or 'train' (Foster)


@jax.jit
def dampen(params, importance_train, importance_forget, selection_threshold,
           dampening_constant):
  """SSD's update, leaf by leaf (Foster et al. eq. 3-4)."""
  chex.assert_trees_all_equal_shapes(params, importance_train,
                                     importance_forget)

  def leaf(theta, i_train, i_forget):
    selected = i_forget > selection_threshold * i_train
    safe_forget = jnp.where(selected, i_forget, 1.0)
    beta = jnp.minimum(dampening_constant * i_train / safe_forget, 1.0)
    return jnp.where(selected, theta * beta, theta)

  return jax.tree.map(leaf, params, importance_train, importance_forget)


def importances(task: UnlearnTask, hparams: SSDHparams):
  """(I_D, I_f), each memoised in the task's shared cache."""
  if hparams.importance_data not in ('train', 'retain'):
    raise ValueError("importance_data must be 'train' or 'retain', got "
                     f'{hparams.importance_data!r}')
  data_rows = None if hparams.importance_data == 'train' else task.retain
  tag = f'ssd/{hparams.estimator}/{hparams.importance_batch_size}'

  def compute(rows):
    split = task.train if rows is None else task.train.subset(rows)
    return importance.fisher_diagonal(
        task.model, task.original, split.images, split.labels,
        estimator=hparams.estimator, batch_size=hparams.importance_batch_size)

  i_train = task.cached(f'{tag}/D', data_rows, lambda: compute(data_rows))
  i_forget = task.cached(f'{tag}/f', task.forget, lambda: compute(task.forget))
  return i_train, i_forget


def importance_ratios(task: UnlearnTask, hparams: SSDHparams = SSDHparams()
                      ) -> np.ndarray:
  """I_f / I_D for every parameter (Goel Fig. 3), non-finite values dropped."""
  i_train, i_forget = importances(task, hparams)
  flat_train = np.concatenate([np.ravel(x) for x in jax.tree.leaves(i_train)])
  flat_forget = np.concatenate([np.ravel(x) for x in jax.tree.leaves(i_forget)])
  with np.errstate(divide='ignore', invalid='ignore'):
    ratios = flat_forget / flat_train
  return ratios[np.isfinite(ratios)]


def unlearn(task: UnlearnTask, hparams: SSDHparams, key: jax.Array):
  del key  # deterministic
  i_train, i_forget = importances(task, hparams)
  params = dampen(task.original['params'], i_train, i_forget,
                  hparams.selection_threshold, hparams.dampening_constant)
  return {'params': jax.device_get(params),
          'batch_stats': task.original['batch_stats']}


def goel_grid(task: UnlearnTask) -> list[SSDHparams]:
  del task
  return [SSDHparams(selection_threshold=float(t),
                     dampening_constant=float(m * t))
          for t in GOEL_SELECTION_THRESHOLDS
          for m in GOEL_DAMPENING_MULTIPLIERS]


METHOD = Method('ssd', unlearn, SSDHparams, goel_grid)
