"""RELOAD: blind unlearning and remedial learning (RELOAD §3, Alg. 1; code
projectavi/Reload; SPEC.md, Methods "RELOAD").

From M_o (θ*), with the cached gradient on the training data g_D = ∇L(D) and
D_new (the retain rows; for remedial learning also `task.corrected`, the
corrected versions of the forget rows, RELOAD §2.1 eq. 3):

1. g_new = ∇L(D_new) at θ* (Alg. 1 line 6; `full_data_gradient`).
2. Priming step θ' = θ* + η_p·(g_D − g_new) (line 6; `priming_step`): one
   ascent step along the proxy of ∇L(D_forget) (§3.2 eq. 4-7; signed, where
   the code primes along |g_D − g_new|, see Departures below).
3. Knowledge values KV_k = (|g_D,k − g_new,k| + ε)/(|g_D,k| + ε) (eq. 8;
   `knowledge_values`), ranked globally over every parameter of every layer
   (BatchNorm scale and bias included, as the code ranks
   `model.named_parameters()`); the lowest `reset_fraction` of them are
   re-initialised with the model's own initialisers (a fresh
   `training.init_variables` with the method's key; `reset_lowest`).
   BatchNorm running statistics are not parameters and stay M_o's.
4. Fine-tune on D_new (line 13) for `budget_fraction` of the recipe's steps
   with the recipe's optimiser and schedule, learning rate
   `learning_rate_scale` × the recipe's.

Gradients (`full_data_gradient`): the code (`knowledge_values.save_kv`) sums,
over the minibatches of a loader, the gradient of each batch-*mean*
cross-entropy, model in evaluation mode. This does the same with consecutive
batches of `gradient_batch_size` rows in row order (the last one partial);
the code's loaders shuffle, so only the last partial batch's members differ.
g_D therefore scales with the number of batches, and so does η_p's effect.

g_D is computed once per original model and memoised in the task's shared
cache under `DATA_GRADIENT_CACHE` (Alg. 1 assumes it was cached at the end of
training; a study may store it with the checkpoint and put it back with
`store_data_gradient`); its time is reported apart from the method's.

Hyper-parameters: the code's defaults are an unlearning learning rate of 0.01
against a training rate of 0.1 (`learning_rate_scale` 0.1; the default here,
1.0, keeps the recipe's rate as the other budgeted methods do), 35 RELOAD
epochs against 182 for training (`budget_fraction` ≈ 0.2) and a reset share
derived from the forget share, clip(0.9·|S_f|/|S_tr|, 0.05, 1) (`main.py`;
`reset_fraction=None` uses that rule). The code's η_p default is 0 (no
priming); the paper's Fig. 2 shows a step being taken, with no value given.
Measured here (8×8 digits, SmallCNN width 16, 300 steps, batch 64, so g sums
18 batch means): η_p = 0.01 changed little, 0.05 wrecked remedial learning
of the cross-pattern shortcut (clean test accuracy 0.99 → 0.76), and a
learning-rate scale of 0.1 left both the BadNet backdoor and the shortcut in
place where 1.0 removed them.
The code's default re-initialisation is zeros (`--init Zero`); the paper's
Alg. 1 says INITIALIZE, which is what this does.

Departures from the code (projectavi/Reload @ feb25ab), checked against its
own outputs in tests/test_equiv_reload.py (tests/fixtures/reference/
reload.npz), where g_D, g_new, KV, the reset mask and (given the code's
primed weights and zeros as the fresh values) the reset match:
- Priming direction. `save_kv` computes `torch.abs_(g_D - g_new)` in place,
  and the tensor it returns, which `main.py` hands to `RELOAD()` as
  `forget_gradients`, is that absolute value: the code primes with
  θ' = θ* + η_p·|g_D − g_new|, moving every parameter up. That is a side
  effect of computing eq. 8's numerator, not the ascent step of §3.2-3.3
  (Fig. 1 step 3, Alg. 1 line 6), so this keeps the sign:
  θ' = θ* + η_p·(g_D − g_new). The two agree where g_D ≥ g_new and differ by
  2·η_p·|g_D − g_new| elsewhere.
- Reset count. The code resets n − int(n·(1 − α)) parameters (rank ≥
  int(n·(1 − α)) among KV sorted high to low), this round(α·n) (`num_to_reset`);
  they agree at the fixture's n = 430, α = 0.1 (43), and may differ by one
  elsewhere (n = 431: 44 against 43).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from unlearnjax import parallel
from unlearnjax import training
from unlearnjax.data.split import Split
from unlearnjax.unlearn import base
from unlearnjax.unlearn import budgeted
from unlearnjax.unlearn.base import Method, UnlearnTask, single

DATA_GRADIENT_CACHE = 'reload/g_D'
REFERENCE_RESET_SCALE = 0.9       # main.py: threshold 0.9 × |S_f| / |S_tr|
REFERENCE_RESET_BOUNDS = (0.05, 1.0)


@dataclasses.dataclass(frozen=True)
class ReloadHparams:
  budget_fraction: float = 0.2        # fine-tuning steps / the recipe's
  learning_rate_scale: float = 1.0    # × the recipe's learning rate
  priming_step_size: float = 0.01     # η_p of the priming step
  reset_fraction: float | None = None  # α; None: the code's rule (see above)
  kv_smoothing: float = 1e-10         # ε of the knowledge values (the code's)
  gradient_batch_size: int = 0        # batches of g_D, g_new; 0: the recipe's

  def validate(self) -> None:
    """Raises ValueError for a bad field (`checks.check_config` calls it
    before a sweep starts)."""
    if self.reset_fraction is not None:
      check_reset_fraction(self.reset_fraction)


# --------------------------------------------------------------------------
# D and D_new.


@dataclasses.dataclass(frozen=True)
class NewData:
  """The data RELOAD and its remedial baselines read.

  Attributes:
    split: `task.train` followed by `task.corrected` (if any).
    data_rows: D, every row of `task.train` (as the model saw it).
    new_rows: D_new, the retain rows, then the corrected rows (RELOAD §2.1
      eq. 3: unlearning when there are none).
  """
  split: Split
  data_rows: np.ndarray
  new_rows: np.ndarray


def new_data(task: UnlearnTask) -> NewData:
  """D and D_new of `task` over one split (raises ValueError if D_new is empty)."""
  train, corrected = task.train, task.corrected
  data_rows = np.arange(len(train), dtype=np.int64)
  if corrected is None:
    split, extra = train, np.zeros((0,), np.int64)
  else:
    if corrected.image_shape != train.image_shape:
      raise ValueError(f'corrected images are {corrected.image_shape}, the '
                       f'training images {train.image_shape}')
    if corrected.num_classes != train.num_classes:
      raise ValueError(f'corrected has {corrected.num_classes} classes, the '
                       f'training set {train.num_classes}')
    split = Split(np.concatenate([train.images, corrected.images]),
                  np.concatenate([train.labels, corrected.labels]),
                  train.num_classes,
                  np.concatenate([train.ids, corrected.ids]))
    extra = len(train) + np.arange(len(corrected), dtype=np.int64)
  new_rows = np.concatenate([task.retain, extra])
  if new_rows.size == 0:
    raise ValueError('D_new is empty: the retain set is empty and there are '
                     'no corrected samples, so there is nothing to fine-tune '
                     'on (RELOAD needs D_new = retain ∪ corrected).')
  return NewData(split, data_rows, new_rows)


def with_new_data(task: UnlearnTask, data: NewData) -> UnlearnTask:
  """`task` whose `train` is `data.split` (so `budgeted.run` can read the
  corrected rows); forget and retain rows keep their meaning."""
  if data.split is task.train:
    return task
  return dataclasses.replace(task, train=data.split)


# --------------------------------------------------------------------------
# Gradients.


@functools.lru_cache(maxsize=64)
def _jitted_accumulate(model: nn.Module) -> Callable:
  """(total, variables, x, y, weights) -> total + per-device ∇Σ_i w_i·CE_i.

  Runs per device (shard_map, no collective): each device adds the gradient
  of its own rows' weighted loss to its own slot of `total` (leading device
  axis), and the host sums the slots at the end. Weights are 1/|batch| on
  real rows, so a batch contributes the gradient of its mean loss; padded
  rows (weight 0) are dropped with `where`, never multiplied in.
  """

  def local(total, variables, images, labels, weights):
    def weighted_loss(params):
      logits = model.apply({'params': params,
                            'batch_stats': variables['batch_stats']}, images,
                           train=False)
      losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      return jnp.sum(jnp.where(weights > 0, weights * losses, 0.0))

    grads = jax.grad(weighted_loss)(variables['params'])
    return jax.tree.map(lambda t, g: t + g[None].astype(t.dtype), total, grads)

  data = P(parallel.DATA_AXIS)
  return jax.jit(jax.shard_map(local, mesh=parallel.data_mesh(),
                               in_specs=(data, P(), data, data, data),
                               out_specs=data, check_vma=False),
                 donate_argnums=0)


def full_data_gradient(model: nn.Module, variables: training.Variables,
                       split: Split, rows: np.ndarray | None = None, *,
                       batch_size: int = 512):
  """g = Σ_b ∇_θ mean_{i∈b} CE(x_i, y_i), a params-shaped tree of float32.

  The sum over consecutive batches b of `batch_size` rows of `split[rows]`
  (in the given order, the last one partial) of the gradient of the batch's
  mean cross-entropy, model in evaluation mode: what the RELOAD code caches
  as ∇L(D) (`knowledge_values.save_kv`). Equals (1/batch_size)·Σ_i ∇CE_i when
  every batch is full.
  """
  rows = (np.arange(len(split), dtype=np.int64) if rows is None
          else np.asarray(rows, np.int64))
  if rows.size == 0:
    raise ValueError('full_data_gradient: no rows to take the gradient over')
  if batch_size <= 0:
    raise ValueError(f'batch_size must be positive, got {batch_size}')
  chex.assert_rank(split.images, 4)
  padded = parallel.round_up_to_devices(min(batch_size, rows.size))
  fn = _jitted_accumulate(model)
  params = variables['params']
  devices = jax.device_count()
  total = parallel.shard_batch(jax.tree.map(
      lambda p: np.zeros((devices, *np.shape(p)), np.float32), params))
  replicated = parallel.replicate(
      {'params': params, 'batch_stats': variables['batch_stats']})
  for start in range(0, rows.size, batch_size):
    take = rows[start:start + batch_size]
    size = take.size
    images = np.zeros((padded, *split.image_shape), np.float32)
    labels = np.zeros((padded,), np.int32)
    weights = np.zeros((padded,), np.float32)
    images[:size], labels[:size] = split.images[take], split.labels[take]
    weights[:size] = 1.0 / size
    total = fn(total, replicated,
               *parallel.shard_batch((images, labels, weights)))
  # One partial sum per device (leading axis); summed here, on the host.
  return jax.tree.map(lambda t: np.sum(t, axis=0),
                      parallel.gather_to_host(total))


def gradient_batch_size(task: UnlearnTask, hparams: ReloadHparams) -> int:
  return hparams.gradient_batch_size or task.recipe.batch_size


def _cache_name(task: UnlearnTask, batch_size: int) -> str:
  if batch_size == task.recipe.batch_size:
    return DATA_GRADIENT_CACHE
  return f'{DATA_GRADIENT_CACHE}/batch_size={batch_size}'


def data_gradient(task: UnlearnTask, batch_size: int | None = None):
  """g_D = ∇L(D) over every row of `task.train` at M_o, memoised in the
  task's shared cache (`DATA_GRADIENT_CACHE` for the recipe's batch size)."""
  batch_size = batch_size or task.recipe.batch_size
  return task.cached(_cache_name(task, batch_size), None,
                     lambda: full_data_gradient(task.model, task.original,
                                                task.train,
                                                batch_size=batch_size))


def has_data_gradient(task: UnlearnTask, batch_size: int | None = None) -> bool:
  batch_size = batch_size or task.recipe.batch_size
  return base.cache_key(_cache_name(task, batch_size), None) in task.cache


def store_data_gradient(task: UnlearnTask, gradient,
                        batch_size: int | None = None) -> None:
  """Puts a g_D computed elsewhere (e.g. stored with M_o's checkpoint) into
  the task's cache; it must be `full_data_gradient` over `task.train` at
  `task.original` with this batch size (default: the recipe's)."""
  chex.assert_trees_all_equal_shapes(gradient, task.original['params'])
  batch_size = batch_size or task.recipe.batch_size
  task.cache[base.cache_key(_cache_name(task, batch_size), None)] = gradient


# --------------------------------------------------------------------------
# Priming, knowledge values, reset: pure functions of host pytrees.


def priming_step(params, data_gradient_tree, new_gradient_tree,
                 priming_step_size: float):
  """θ' = θ + η_p·(g_D − g_new) (RELOAD Alg. 1 line 6, §3.2 eq. 7).

  Signed, as the paper writes it; the authors' code primes along
  |g_D − g_new| instead (an in-place `abs_` in `save_kv`; module doc,
  Departures). `priming_step(θ, |g_D − g_new|, 0, η_p)` gives the code's.
  """
  chex.assert_trees_all_equal_shapes(params, data_gradient_tree,
                                     new_gradient_tree)
  return jax.tree.map(
      lambda theta, g_d, g_n: np.asarray(
          np.asarray(theta) + priming_step_size * (np.asarray(g_d)
                                                   - np.asarray(g_n)),
          np.asarray(theta).dtype),
      params, data_gradient_tree, new_gradient_tree)


def knowledge_values(data_gradient_tree, new_gradient_tree,
                     kv_smoothing: float = 1e-10):
  """KV_k = (|g_D,k − g_new,k| + ε) / (|g_D,k| + ε) (RELOAD eq. 8).

  Small values mark parameters whose gradient barely changes when D_forget
  is taken away relative to their gradient on D, i.e. parameters that know
  D_forget well (§3.2).
  """
  chex.assert_trees_all_equal_shapes(data_gradient_tree, new_gradient_tree)

  def leaf(g_d, g_n):
    g_d = np.asarray(g_d, np.float64)
    g_n = np.asarray(g_n, np.float64)
    return ((np.abs(g_d - g_n) + kv_smoothing)
            / (np.abs(g_d) + kv_smoothing)).astype(np.float32)

  return jax.tree.map(leaf, data_gradient_tree, new_gradient_tree)


def num_to_reset(num_parameters: int, reset_fraction: float) -> int:
  """round(reset_fraction · n), halves rounded up."""
  check_reset_fraction(reset_fraction)
  return min(num_parameters, int(np.floor(reset_fraction * num_parameters
                                          + 0.5)))


def check_reset_fraction(reset_fraction: float) -> None:
  if not 0.0 <= reset_fraction < 1.0:
    raise ValueError(f'reset_fraction must be in [0, 1) (the share of '
                     f'parameters RELOAD re-initialises), got {reset_fraction}')


def reset_lowest(params, knowledge, fresh, reset_fraction: float):
  """Re-initialises the parameters with the lowest knowledge values.

  Ranks KV globally over all leaves; the round(reset_fraction · n) lowest
  take their value from `fresh` (the model's own initialisers), every other
  parameter keeps its value in `params`. Ties at the threshold are broken by
  position (leaves in `jax.tree` order, then row-major), so exactly that
  many are reset. Returns (new params, boolean mask of the reset entries).
  """
  chex.assert_trees_all_equal_shapes(params, knowledge, fresh)
  leaves, treedef = jax.tree.flatten(knowledge)
  flat = np.concatenate([np.asarray(k, np.float64).ravel() for k in leaves])
  if not np.all(np.isfinite(flat)):
    raise FloatingPointError('knowledge values hold NaN/inf: the gradients '
                             'on D or D_new are not finite')
  k = num_to_reset(flat.size, reset_fraction)
  chosen = np.zeros(flat.size, bool)
  if k > 0:
    threshold = np.partition(flat, k - 1)[k - 1]
    chosen = flat < threshold
    ties = np.flatnonzero(flat == threshold)
    chosen[ties[:k - int(chosen.sum())]] = True
  assert int(chosen.sum()) == k
  masks, offset = [], 0
  for leaf in leaves:
    size = int(np.size(leaf))
    masks.append(chosen[offset:offset + size].reshape(np.shape(leaf)))
    offset += size
  mask = jax.tree.unflatten(treedef, masks)
  new_params = jax.tree.map(
      lambda m, theta, init: np.where(m, np.asarray(init),
                                      np.asarray(theta)).astype(
                                          np.asarray(theta).dtype),
      mask, params, fresh)
  return new_params, mask


def reference_reset_fraction(task: UnlearnTask) -> float:
  """The code's α: clip(0.9·|S_f|/|S_tr|, 0.05, 1) (`main.py`)."""
  low, high = REFERENCE_RESET_BOUNDS
  share = task.forget.size / len(task.train)
  return float(min(max(REFERENCE_RESET_SCALE * share, low), high))


# --------------------------------------------------------------------------
# The method.


def _check(hparams: ReloadHparams) -> None:
  if hparams.reset_fraction is not None:
    check_reset_fraction(hparams.reset_fraction)
  if hparams.budget_fraction < 0:
    raise ValueError(f'budget_fraction must be >= 0, got '
                     f'{hparams.budget_fraction}')
  if hparams.kv_smoothing < 0:
    raise ValueError(f'kv_smoothing must be >= 0, got {hparams.kv_smoothing}')
  if hparams.gradient_batch_size < 0:
    raise ValueError('gradient_batch_size must be >= 0 (0: the recipe\'s), '
                     f'got {hparams.gradient_batch_size}')


def unlearn(task: UnlearnTask, hparams: ReloadHparams, key: jax.Array):
  """RELOAD Alg. 1; returns `Unlearned(variables, info)` (see module doc)."""
  _check(hparams)
  data = new_data(task)
  reset_fraction = (reference_reset_fraction(task)
                    if hparams.reset_fraction is None
                    else hparams.reset_fraction)
  reset_key, fit_key = jax.random.split(key)
  batch_size = gradient_batch_size(task, hparams)

  start = time.perf_counter()
  cached = has_data_gradient(task, batch_size)
  g_data = data_gradient(task, batch_size)
  after_data = time.perf_counter()
  g_new = full_data_gradient(task.model, task.original, data.split,
                             data.new_rows, batch_size=batch_size)
  after_new = time.perf_counter()

  params = jax.device_get(task.original['params'])
  primed = priming_step(params, g_data, g_new, hparams.priming_step_size)
  knowledge = knowledge_values(g_data, g_new, hparams.kv_smoothing)
  fresh = training.init_variables(task.model, reset_key,
                                  task.train.image_shape)['params']
  reset, mask = reset_lowest(primed, knowledge, jax.device_get(fresh),
                             reset_fraction)
  variables = {'params': reset,
               'batch_stats': jax.device_get(task.original['batch_stats'])}
  after_reset = time.perf_counter()

  steps = 0
  if hparams.budget_fraction > 0:
    recipe = budgeted.budget_recipe(task, hparams.budget_fraction,
                                    hparams.learning_rate_scale)
    steps = recipe.steps
    variables = training.fit(task.model, recipe, data.split, fit_key,
                             indices=data.new_rows, variables=variables,
                             what='reload', curve=task.curve)
  end = time.perf_counter()

  num_reset = int(sum(np.sum(m) for m in jax.tree.leaves(mask)))
  num_parameters = int(sum(np.size(m) for m in jax.tree.leaves(mask)))
  info = {
      'reset_fraction': reset_fraction,
      'num_reset': num_reset,
      'num_parameters': num_parameters,
      'reset_share': num_reset / num_parameters,
      'fine_tune_steps': steps,
      'remedial': task.corrected is not None,
      'data_gradient_cached': cached,
      'seconds_data_gradient': after_data - start,
      'seconds_new_gradient': after_new - after_data,
      'seconds_prime_and_reset': after_reset - after_new,
      'seconds_fine_tune': end - after_reset,
      # Alg. 1 takes g_D as given: the unlearning time leaves it out.
      'seconds_unlearn': end - after_data,
  }
  return base.Unlearned(variables, info)


METHOD = Method('reload', unlearn, ReloadHparams, single(ReloadHparams),
                reads_corrected=True)
