"""SalUn, saliency unlearning (Fan et al. 2023; RELOAD §4.2 baseline; SPEC.md,
Methods "SalUn").

1. Saliency: g = ∇θ Ê_{S_f}[CE] at M_o (model in evaluation mode, as
   SalUn's `generate_mask.py` puts it in `model.eval()`), here the exact mean
   over S_f of per-sample gradients (the code sums batch-mean gradients over
   the forget loader: the same direction up to the last, partial batch). The
   mask keeps the k = ⌊saliency_fraction · N⌋ parameters with the largest |g|,
   ranked globally over every parameter of every layer (the code's
   `int(len(all_elements) * ratio)`; its default ratio is 0.5); ties go to the
   earlier position in `jax.tree.leaves` order.
2. Random labelling (SalUn's RL objective, paper eq. 5: y' ≠ y): every forget
   sample gets one label drawn uniformly from the classes other than its
   given one, drawn once (the code draws once per unlearning run, from all
   classes; `wrong_labels_only=False` does that).
3. From M_o, `budget_fraction` of the recipe's optimiser steps of CE with
   BatchNorm in training mode. `forget_weight=None` (default) draws each
   batch from S_f (random labels) ∪ retain, as SalUn's RL code trains on the
   `ConcatDataset` of both; a float w draws one batch of each per step and
   minimises w · CE(forget, y') + (1 − w) · CE(retain, y).

Only masked parameters move: the element-wise mask zeroes the optimiser's
final updates (`keep_masked`), so every other parameter stays exactly M_o's
(weight decay and momentum included). SalUn's code multiplies the gradient by
the mask before `optimizer.step()`, so torch's coupled weight decay still
shrinks the unmasked weights there; here they are frozen. BatchNorm running
statistics follow the training batches, as in the code.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from unlearnjax import grads as grads_lib
from unlearnjax import parallel
from unlearnjax import training
from unlearnjax.data.split import Split
from unlearnjax.unlearn import budgeted
from unlearnjax.unlearn.base import Method, UnlearnTask, Unlearned, single


@dataclasses.dataclass(frozen=True)
class SalUnHparams:
  saliency_fraction: float = 0.5     # share of parameters trained (SalUn: 0.5)
  budget_fraction: float = 0.05      # share of the recipe's optimiser steps
  learning_rate_scale: float = 1.0   # × the recipe's learning rate
  forget_weight: float | None = None  # None: batches of S_f ∪ retain (code)
  wrong_labels_only: bool = True     # y' ≠ y (paper); False: any class (code)


# ----------------------------------------------------------------------------
# Saliency mask
# ----------------------------------------------------------------------------


def saliency_mask(gradient, saliency_fraction: float):
  """Boolean pytree: True for the ⌊saliency_fraction · N⌋ entries of largest
  |gradient| over all leaves (SalUn's hard mask). Ties: earlier leaf/position
  first (stable sort in `jax.tree.leaves` order)."""
  if not 0.0 < saliency_fraction <= 1.0:
    raise ValueError('saliency_fraction must be in (0, 1], got '
                     f'{saliency_fraction}')
  leaves, treedef = jax.tree.flatten(gradient)
  if not leaves:
    raise ValueError('saliency_mask: the gradient pytree has no leaves')
  magnitude = np.concatenate([np.abs(np.ravel(np.asarray(x, np.float64)))
                              for x in leaves])
  if not np.all(np.isfinite(magnitude)):
    raise ValueError('saliency_mask: the gradient holds NaN or inf')
  count = int(magnitude.size * saliency_fraction)
  keep = np.zeros(magnitude.size, bool)
  keep[np.argsort(-magnitude, kind='stable')[:count]] = True
  masks, start = [], 0
  for leaf in leaves:
    size = int(np.size(leaf))
    masks.append(keep[start:start + size].reshape(np.shape(leaf)))
    start += size
  return jax.tree.unflatten(treedef, masks)


@functools.lru_cache(maxsize=16)
def _per_sample_grad_fn(model: nn.Module) -> Callable:
  def fn(variables, x, y):
    loss = grads_lib.example_cross_entropy(model, variables['batch_stats'])
    return grads_lib.per_sample_grads(loss, variables['params'], x, y)
  return fn


def forget_gradient(task: UnlearnTask, chunk_size: int = 256):
  """∇θ Ê_{S_f}[CE] at M_o (evaluation mode): the exact mean of per-sample
  gradients, memoised in the task's shared cache."""
  split = task.forget_split

  def compute():
    return grads_lib.mean_over_samples(
        _per_sample_grad_fn(task.model), task.original, split.images,
        split.labels, chunk_size)

  return task.cached('salun/forget_gradient', task.forget, compute)


# ----------------------------------------------------------------------------
# Element-wise masked optimiser (optax)
# ----------------------------------------------------------------------------


class KeepMaskedState(NamedTuple):
  mask: Any   # bool pytree shaped like the params


def keep_masked(mask) -> optax.GradientTransformation:
  """Zeroes every update where `mask` is False. The mask lives in the state
  (set by `init`), so one compiled step serves every mask; `keep_masked(None)`
  gives the same update rule for building that step."""

  def init_fn(params):
    if mask is None:
      raise ValueError('keep_masked(None) can only update, not initialise')
    chex.assert_trees_all_equal_shapes(mask, params)
    return KeepMaskedState(jax.tree.map(lambda m: jnp.asarray(m, bool), mask))

  def update_fn(updates, state, params=None):
    del params
    # where, not a product: a frozen entry gets exactly 0, even from inf/NaN.
    updates = jax.tree.map(lambda u, m: jnp.where(m, u, jnp.zeros_like(u)),
                           updates, state.mask)
    return updates, state

  return optax.GradientTransformation(init_fn, update_fn)


def masked_optimizer(recipe: training.Recipe, mask
                     ) -> optax.GradientTransformation:
  """The recipe's optimiser followed by `keep_masked(mask)`."""
  return optax.chain(training.make_optimizer(recipe), keep_masked(mask))


@functools.lru_cache(maxsize=32)
def jitted_masked_step(model: nn.Module, recipe: training.Recipe) -> Callable:
  """`budgeted.objective_step` with the masked optimiser; the mask comes in
  the state's optimiser state."""
  return jax.jit(functools.partial(
      budgeted.objective_step, model=model,
      tx=masked_optimizer(recipe, None), noisy=False, trainable=None),
                 donate_argnums=0)


# ----------------------------------------------------------------------------
# Random labels and training
# ----------------------------------------------------------------------------


def random_labels(labels: np.ndarray, num_classes: int,
                  rng: np.random.Generator, *, wrong_only: bool = True
                  ) -> np.ndarray:
  """One uniform label per sample; with `wrong_only`, from the classes other
  than its given label (y' ≠ y)."""
  labels = np.asarray(labels, np.int64)
  if num_classes < 2 and wrong_only:
    raise ValueError('wrong labels need at least 2 classes')
  if not wrong_only:
    return rng.integers(0, num_classes, labels.size).astype(np.int32)
  shift = rng.integers(1, num_classes, labels.size)
  return ((labels + shift) % num_classes).astype(np.int32)


def train_masked(task: UnlearnTask, recipe: training.Recipe,
                 train: Split, parts: list[budgeted.Part],
                 mask, *, what: str) -> training.Variables:
  """`recipe.steps` steps of Σ_i w_i · CE(part_i) from M_o over the rows of
  `train` (which may carry relabelled rows), updating only `mask`."""
  parallel.check_batch_size(recipe.batch_size)
  tx = masked_optimizer(recipe, mask)
  state = parallel.replicate(training.create_train_state(task.original, tx))
  step_fn = jitted_masked_step(task.model, recipe)
  orders = [training.index_batches(p.rows.size, recipe.batch_size, p.rng)
            for p in parts]
  weights = parallel.replicate([np.float32(p.weight) for p in parts])
  images, labels = train.images, train.labels

  def make_batch(_):
    batches = []
    for part, order, weight in zip(parts, orders, weights):
      take = part.rows[next(order)]
      batches.append({**parallel.shard_batch(
          {'image': images[take], 'label': labels[take]}), 'weight': weight})
    return {'parts': tuple(batches)}

  state, _ = training.run_steps(step_fn, state, make_batch, recipe.steps,
                                what=what, curve=task.curve)
  return jax.device_get(state.variables)


def unlearn(task: UnlearnTask, hparams: SalUnHparams, key: jax.Array):
  weight = hparams.forget_weight
  if weight is not None and not 0.0 <= weight <= 1.0:
    raise ValueError(f'forget_weight must be None or in [0, 1], got {weight}')
  mask = saliency_mask(forget_gradient(task), hparams.saliency_fraction)
  label_key, retain_rng = budgeted.fit_keys(key)
  label_key, forget_key = jax.random.split(label_key)
  train = task.train
  relabelled = train.labels.copy()
  relabelled[task.forget] = random_labels(
      train.labels[task.forget], train.num_classes,
      budgeted.key_rng(label_key), wrong_only=hparams.wrong_labels_only)
  train = train.replace(labels=relabelled)
  if weight is None:
    rows = np.sort(np.concatenate([task.forget, task.retain]))
    parts = [budgeted.Part(rows, 1.0, retain_rng)]
  else:
    parts = [budgeted.Part(task.retain, 1.0 - weight, retain_rng),
             budgeted.Part(task.forget, weight, budgeted.key_rng(forget_key))]
  recipe = budgeted.budget_recipe(task, hparams.budget_fraction,
                                  hparams.learning_rate_scale)
  variables = train_masked(task, recipe, train, parts, mask, what='salun')
  salient = int(sum(np.sum(m) for m in jax.tree.leaves(mask)))
  total = int(sum(np.size(m) for m in jax.tree.leaves(mask)))
  return Unlearned(variables, {'salient_parameters': salient,
                               'parameters': total})


METHOD = Method('salun', unlearn, SalUnHparams, single(SalUnHparams))
