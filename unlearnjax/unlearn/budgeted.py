"""What the budgeted baselines of Pawelczyk et al. (A.2) share: GD, NGD, GA,
EU-k, CF-k and NegGrad+ (SPEC.md, Methods).

Every one starts from M_o (EU-k re-initialises its last k layers first),
takes `budget_fraction` of the original recipe's optimiser steps
(`Recipe.scaled`: max(1, round(budget_fraction · steps)); the paper's 2 … 10%
of training compute) at the recipe's batch size, optimiser, warm-up and
linear decay, with the learning rate `learning_rate_scale` × the recipe's.

One jitted step (`objective_step`) minimises Σ_i w_i · CE(part_i) over one
fixed-size batch of each part (retain rows, forget rows), optionally adds
N(0, σ²) noise to every gradient (NGD) and optionally trains only some
top-level modules (EU-k, CF-k). GD is plain `training.fit` on the retain set.

Keys: `fit_keys` splits a key exactly as `training.fit` does (init key; retain
batch order), so every method draws the same retain batches as GD for the
same key (NGD with σ = 0 and NegGrad+ with β = 1 retrace GD's steps).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import chex
import flax.linen as nn
import jax
import numpy as np
import optax

from unlearnjax import parallel
from unlearnjax import training
from unlearnjax.unlearn.base import UnlearnTask


@dataclasses.dataclass(frozen=True)
class Part:
  """One term w · CE of the objective: batches of `rows` of the training set,
  drawn by `training.index_batches` with `rng`."""
  rows: np.ndarray
  weight: float
  rng: np.random.Generator


def budget_recipe(task: UnlearnTask, budget_fraction: float,
                  learning_rate_scale: float) -> training.Recipe:
  return task.recipe.scaled(
      budget_fraction,
      learning_rate=task.recipe.learning_rate * learning_rate_scale)


def fit_keys(key: jax.Array) -> tuple[jax.Array, np.random.Generator]:
  """(init key, retain batch-order rng), split as `training.fit` splits `key`."""
  init_key, order_key = jax.random.split(key)
  seed = int(jax.random.randint(order_key, (), 0, 2**31 - 1))
  return init_key, np.random.default_rng(seed)


def key_rng(key: jax.Array) -> np.random.Generator:
  return np.random.default_rng(
      np.asarray(jax.random.key_data(key)).ravel().tolist())


def fresh_variables(model: nn.Module, key: jax.Array,
                    image_shape: tuple[int, ...]) -> training.Variables:
  """A fresh initialisation; its `params` keys are in definition order (flax
  builds the dict as the compact modules are created; any jax.tree.map,
  e.g. a checkpoint round trip, re-sorts them by name, so M_o's order is not
  to be trusted)."""
  return training.init_variables(model, key, image_shape)


def last_modules(fresh: training.Variables, num_layers: int) -> tuple[str, ...]:
  """Names of the last `num_layers` top-level entries of `params` in
  definition order (`fresh_variables`). A layer is a top-level parameter
  module: SmallCNN is Conv_0, BatchNorm_0, …, Conv_2, BatchNorm_2, Dense_0
  (a BatchNorm counts as a layer of its own), ResNet-18 is Conv_0,
  BatchNorm_0, BasicBlock_0 … BasicBlock_7, Dense_0 (a block is one layer)."""
  names = list(fresh['params'])
  if not 1 <= num_layers <= len(names):
    raise ValueError(f'num_trainable_layers={num_layers}: the model has '
                     f'{len(names)} top-level layers ({", ".join(names)})')
  return tuple(names[-num_layers:])


def make_optimizer(recipe: training.Recipe,
                   trainable: tuple[str, ...] | None
                   ) -> optax.GradientTransformation:
  """The recipe's optimiser; with `trainable`, only those top-level modules
  get updates (and weight decay); every other parameter gets exactly 0."""
  tx = training.make_optimizer(recipe)
  if trainable is None:
    return tx

  def labels(params):
    return {name: jax.tree.map(
        lambda _, n=name: 'train' if n in trainable else 'freeze', sub)
            for name, sub in params.items()}

  return optax.multi_transform({'train': tx, 'freeze': optax.set_to_zero()},
                               labels)


def objective_step(state: training.TrainState, batch: dict, *,
                   model: nn.Module, tx: optax.GradientTransformation,
                   noisy: bool, trainable: tuple[str, ...] | None):
  """One optimiser step on Σ_i w_i · CE(part_i). Pure; jit it once.

  batch: {'parts': ({'image', 'label', 'weight'}, …)} and, if `noisy`,
  'noise_std' and 'noise_key'. BatchNorm runs in training mode, the parts
  forwarded one after another (as Kurmanji's NegGrad+ code calls the model
  on the retain batch, then on the forget batch), each updating the running
  statistics. With `trainable`, the statistics of every other module are
  put back after the step, so the frozen layers stay exactly M_o's.
  """
  for part in batch['parts']:
    chex.assert_rank(part['image'], 4)

  def loss_fn(params):
    batch_stats, loss, ces = state.batch_stats, 0.0, []
    for part in batch['parts']:
      logits, batch_stats = training.forward(model, params, batch_stats,
                                             part['image'], train=True)
      ce = training.cross_entropy(logits, part['label'])
      loss, ces = loss + part['weight'] * ce, ces + [ce]
    return loss, (batch_stats, ces)

  (loss, (batch_stats, ces)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  if noisy:  # NGD: g_t + ξ_t, ξ_t ~ N(0, σ² I), a fresh draw every step
    key = jax.random.fold_in(batch['noise_key'], state.step)
    leaves, treedef = jax.tree.flatten(grads)
    keys = jax.random.split(key, len(leaves))
    grads = jax.tree.unflatten(treedef, [
        g + batch['noise_std'] * jax.random.normal(k, g.shape, g.dtype)
        for g, k in zip(leaves, keys)])
  if trainable is not None:
    batch_stats = {name: stats if name in trainable else state.batch_stats[name]
                   for name, stats in batch_stats.items()}
  state = training.apply_gradients(state, grads, batch_stats, tx)
  return state, {'loss': loss, **{f'ce_{i}': ce for i, ce in enumerate(ces)}}


@functools.lru_cache(maxsize=64)
def jitted_objective_step(model: nn.Module, recipe: training.Recipe,
                          noisy: bool, trainable: tuple[str, ...] | None
                          ) -> Callable:
  tx = make_optimizer(recipe, trainable)
  return jax.jit(functools.partial(objective_step, model=model, tx=tx,
                                   noisy=noisy, trainable=trainable),
                 donate_argnums=0)


def run(task: UnlearnTask, recipe: training.Recipe,
        variables: training.Variables, parts: list[Part], *, what: str,
        trainable: tuple[str, ...] | None = None, noise_std: float = 0.0,
        noise_key: jax.Array | None = None, curve_after: int = 0
        ) -> training.Variables:
  """`recipe.steps` steps of `objective_step` from `variables`; each step
  draws one batch of `recipe.batch_size` rows from every part (with
  replacement from a part smaller than a batch). Only the parts' rows are
  ever read. Raises FloatingPointError when the loss or parameters diverge.
  `task.curve` records the steps (from step `curve_after + 1`: a method's
  second phase)."""
  parallel.check_batch_size(recipe.batch_size)
  noisy = noise_key is not None
  tx = make_optimizer(recipe, trainable)
  state = parallel.replicate(training.create_train_state(variables, tx))
  step_fn = jitted_objective_step(task.model, recipe, noisy, trainable)
  orders = [training.index_batches(p.rows.size, recipe.batch_size, p.rng)
            for p in parts]
  constants = parallel.replicate({
      'weights': [np.float32(p.weight) for p in parts],
      **({'noise_std': np.float32(noise_std), 'noise_key': noise_key}
         if noisy else {})})
  images, labels = task.train.images, task.train.labels

  def make_batch(_):
    batches = []
    for part, order, weight in zip(parts, orders, constants['weights']):
      take = part.rows[next(order)]
      batches.append({**parallel.shard_batch(
          {'image': images[take], 'label': labels[take]}), 'weight': weight})
    extra = {k: v for k, v in constants.items() if k != 'weights'}
    return {'parts': tuple(batches), **extra}

  curve = None if task.curve is None else task.curve.after(curve_after)
  state, _ = training.run_steps(step_fn, state, make_batch, recipe.steps,
                                what=what, curve=curve)
  return jax.device_get(state.variables)
