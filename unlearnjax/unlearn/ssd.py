"""Selective Synaptic Dampening, SSD (Foster et al. 2023 §3; Goel A.2 (3)).

Importances I_D and I_f (diagonal empirical Fisher, `unlearnjax.importance`);
every parameter with I_f,i > τ·I_D,i (strict; τ = `selection_threshold`) is
multiplied by β_i = min(λ·I_D,i / I_f,i, 1) (λ = `dampening_constant`); so
I_D,i = 0 < I_f,i zeroes it. No training; BatchNorm statistics are left as
they are; the model runs in evaluation mode.

The defaults are the authors' code (Goel's benchmark, `src/utils.py:ssd_tuning`
called from `methods.SSD`, equivalent to Foster's `ParameterPerturber`;
tested against both in `tests/test_equiv_ssd.py`):

* `estimator='per_batch'`: the mean over minibatches of the squared gradient
  of the batch-mean loss, over `shuffle`d batches of the training batch size
  (`importance_batch_size=0`; the authors' loaders share the training batch
  and shuffle). Goel's τ grid was tuned on this estimate.
* `importance_data='retain'`: Goel's `main.py` passes the retain loader as
  SSD's "full" data, so I_D is over D_r. Foster's repository uses D = S_tr
  (`'train'`), which bounds every ratio I_f/I_D by |S_tr|/|S_f| and so turns
  larger thresholds into no-ops.

The library's own variant, registered as `ssd_exact`: `estimator='exact'`,
the per-sample mean of g² (`vmap(grad)`), independent of batch size and order;
the corrective study runs both and reports which heals more at what cost.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np

from unlearnjax import importance
from unlearnjax.unlearn import importances as importances_lib
from unlearnjax.unlearn.base import Method, UnlearnTask, Unlearned

# Goel A.2 (3): τ grid and λ as multiples of τ; 50 configurations.
GOEL_SELECTION_THRESHOLDS = (0.1, 1, 10, 50, 100, 500, 1000, 1e4, 1e5, 1e6)
GOEL_DAMPENING_MULTIPLIERS = (0.1, 0.5, 1, 5, 10)


@dataclasses.dataclass(frozen=True)
class SSDHparams:
  selection_threshold: float = 10.0   # Foster's α
  dampening_constant: float = 1.0     # Foster's λ
  estimator: str = 'per_batch'        # 'per_batch' (authors) or 'exact' (vmap)
  importance_batch_size: int = 0      # per-batch estimate's batch; 0: the
                                      # training recipe's (authors' loaders)
  importance_data: str = 'retain'     # I_D over 'retain' (the corrective-
                                      # benchmark code) or 'train' (Foster)
  shuffle: bool = True                # per_batch: shuffled batches (authors'
                                      # loaders); False walks rows in order

  def __post_init__(self):
    if self.estimator not in importance.ESTIMATORS:
      raise ValueError(f'ssd.estimator must be one of {importance.ESTIMATORS},'
                       f' got {self.estimator!r}')
    if self.importance_data not in ('train', 'retain'):
      raise ValueError("ssd.importance_data must be 'train' or 'retain', got "
                       f'{self.importance_data!r}')
    if self.importance_batch_size < 0:
      raise ValueError('ssd.importance_batch_size must be >= 0 (0: the '
                       f'recipe\'s batch), got {self.importance_batch_size}')


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


def importance_batch_size(task: UnlearnTask, hparams) -> int:
  """The per-batch estimate's batch: the hparam, or the recipe's if 0."""
  return hparams.importance_batch_size or task.recipe.batch_size


def importances(task: UnlearnTask, hparams: SSDHparams,
                key: jax.Array | None = None):
  """(I_D, I_f), each memoised in the task's shared cache
  (`unlearn.importances`: with the exact estimator, I_D over D_r comes from
  the one pass over S_tr that every found fraction shares).

  `key` shuffles the per-batch estimate's rows (with `hparams.shuffle`); the
  study gives every configuration of a grid the same key, so the grid shares
  one pair of importances.
  """
  shuffled = hparams.estimator == 'per_batch' and hparams.shuffle
  i_train, i_forget = importances_lib.task_importances(
      task, importance='fisher', estimator=hparams.estimator,
      batch_size=importance_batch_size(task, hparams),
      data=hparams.importance_data, shuffle_key=key if shuffled else None)
  return i_train.value, i_forget.value


def importance_ratios(task: UnlearnTask, hparams: SSDHparams = SSDHparams(),
                      key: jax.Array | None = None) -> np.ndarray:
  """I_f / I_D for every parameter (Goel Fig. 3), non-finite values dropped."""
  i_train, i_forget = importances(task, hparams, key)
  flat_train = np.concatenate([np.ravel(x) for x in jax.tree.leaves(i_train)])
  flat_forget = np.concatenate([np.ravel(x) for x in jax.tree.leaves(i_forget)])
  with np.errstate(divide='ignore', invalid='ignore'):
    ratios = flat_forget / flat_train
  return ratios[np.isfinite(ratios)]


def unlearn(task: UnlearnTask, hparams: SSDHparams, key: jax.Array):
  """SSD's dampening; `key` only shuffles the per-batch importance's rows."""
  i_train, i_forget = importances(task, hparams, key)
  params = dampen(task.original['params'], i_train, i_forget,
                  hparams.selection_threshold, hparams.dampening_constant)
  info = {}
  if hparams.estimator == 'per_batch':
    info['importance_batch_size_used'] = importance_batch_size(task, hparams)
  return Unlearned({'params': jax.device_get(params),
                    'batch_stats': task.original['batch_stats']}, info)


def goel_grid_of(hparams_cls) -> Callable[[UnlearnTask], list]:
  """Goel A.2 (3): 10 thresholds τ × 5 dampening constants λ = m·τ, on the
  defaults of `hparams_cls` (so a variant keeps its own estimator)."""
  def grid(task: UnlearnTask) -> list:
    del task
    return [hparams_cls(selection_threshold=float(t),
                        dampening_constant=float(m * t))
            for t in GOEL_SELECTION_THRESHOLDS
            for m in GOEL_DAMPENING_MULTIPLIERS]
  return grid


goel_grid = goel_grid_of(SSDHparams)


def method(name: str, **defaults) -> Method:
  """SSD under `name`, with other defaults (e.g. `estimator='exact'`)."""
  hparams_cls = SSDHparams if not defaults else dataclasses.make_dataclass(
      f'SSDHparams_{name}',
      [(field, type(value), dataclasses.field(default=value))
       for field, value in defaults.items()],
      bases=(SSDHparams,), frozen=True)
  return Method(name, unlearn, hparams_cls, goel_grid_of(hparams_cls))


METHOD = method('ssd')
