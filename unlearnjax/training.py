"""Training: state, optimiser (Goel A.1 recipe), jitted data-parallel steps.

`train_step(state, batch) -> (state, metrics)` is pure and jitted once per
(model, optimiser) pair; `fit` runs it in a Python loop (on XLA:CPU a conv
step inside `lax.scan` is ~30x slower, jax#12868).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import TYPE_CHECKING, Any, Callable, Iterator

import chex
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from unlearnjax import checkpoint
from unlearnjax import parallel
from unlearnjax.errors import ConfigError
from unlearnjax.grads import padded_chunks
from unlearnjax.data.split import Split

if TYPE_CHECKING:
  from unlearnjax import curves

Variables = dict  # {'params': ..., 'batch_stats': ...}


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any

  @property
  def variables(self) -> Variables:
    return {'params': self.params, 'batch_stats': self.batch_stats}


@dataclasses.dataclass(frozen=True)
class Recipe:
  """Goel et al. A.1: SGD momentum 0.9, weight decay 5e-4, batch 512, linear
  schedule over `schedule_stretch` (t_mult = 1.25) x the steps, 1% warm-up.

  Step-based: `steps` optimiser steps of `batch_size` samples, data reshuffled
  every epoch.
  """
  steps: int = 4000
  batch_size: int = 512
  learning_rate: float = 0.025
  momentum: float = 0.9
  weight_decay: float = 5e-4
  warmup_fraction: float = 0.01
  schedule_stretch: float = 1.25
  eval_batch_size: int = 1024
  optimizer: str = 'sgd'   # 'sgd' (Goel A.1) or 'adamw' (Potion §4.2, ViT)

  def __post_init__(self):
    """Raises ConfigError naming the first field out of range (a recipe of
    0 steps would train nothing and report chance-level numbers as real)."""
    def bad(field, valid):
      return ConfigError(f'{field}={getattr(self, field)!r}: {valid}.')
    def number(value):
      return (isinstance(value, (int, float, np.floating, np.integer))
              and not isinstance(value, bool) and math.isfinite(value))
    def whole(value):
      return isinstance(value, (int, np.integer)) and not isinstance(value,
                                                                     bool)
    for field in ('steps', 'batch_size', 'eval_batch_size'):
      if not whole(getattr(self, field)) or getattr(self, field) < 1:
        raise bad(field, 'must be a whole number >= 1')
    # 0 is allowed here (a frozen run, e.g. in tests); a study's recipe must
    # train (`checks.check_recipe`).
    if not number(self.learning_rate) or self.learning_rate < 0:
      raise bad('learning_rate', 'must be a finite number >= 0')
    if not number(self.momentum) or not 0 <= self.momentum < 1:
      raise bad('momentum', 'must be in [0, 1)')
    if not number(self.weight_decay) or self.weight_decay < 0:
      raise bad('weight_decay', 'must be a finite number >= 0')
    if not number(self.warmup_fraction) or not 0 <= self.warmup_fraction < 1:
      raise bad('warmup_fraction', 'must be in [0, 1)')
    if not number(self.schedule_stretch) or self.schedule_stretch < 1:
      raise bad('schedule_stretch', 'must be >= 1 (the decay ends at '
                'schedule_stretch x steps)')
    if self.optimizer not in ('sgd', 'adamw'):
      raise bad('optimizer', "must be 'sgd' or 'adamw'")

  def scaled(self, budget_fraction: float, **changes) -> 'Recipe':
    """The same recipe for a share of the original steps (unlearning budgets)."""
    steps = max(1, int(round(self.steps * budget_fraction)))
    return dataclasses.replace(self, steps=steps, **changes)


def learning_rate_schedule(recipe: Recipe) -> optax.Schedule:
  """Linear warm-up to the peak, then linear decay towards 0 at stretch x steps."""
  warmup = max(1, int(round(recipe.warmup_fraction * recipe.steps)))
  horizon = max(warmup + 1, int(round(recipe.schedule_stretch * recipe.steps)))
  return optax.join_schedules(
      [optax.linear_schedule(0.0, recipe.learning_rate, warmup),
       optax.linear_schedule(recipe.learning_rate, 0.0, horizon - warmup)],
      [warmup])


def make_optimizer(recipe: Recipe,
                   learning_rate: optax.ScalarOrSchedule | None = None
                   ) -> optax.GradientTransformation:
  """SGD with coupled L2 weight decay (as torch.optim.SGD does), or AdamW
  (decoupled decay; Potion fine-tunes its ViT with it).

  `learning_rate` replaces the recipe's schedule (e.g. a reference run's
  learning rate per step, in the equivalence tests); None keeps it.
  """
  if learning_rate is None:
    learning_rate = learning_rate_schedule(recipe)
  if recipe.optimizer == 'adamw':
    return optax.adamw(learning_rate, weight_decay=recipe.weight_decay)
  if recipe.optimizer != 'sgd':
    raise ValueError(f"Unknown optimizer {recipe.optimizer!r}; valid: 'sgd', "
                     "'adamw'")
  return optax.chain(
      optax.add_decayed_weights(recipe.weight_decay),
      optax.sgd(learning_rate, momentum=recipe.momentum))


def init_variables(model: nn.Module, key: jax.Array,
                   image_shape: tuple[int, ...]) -> Variables:
  variables = model.init(key, jnp.zeros((1, *image_shape), jnp.float32),
                         train=False)
  variables = flax.core.unfreeze(variables)
  return {'params': variables['params'],
          'batch_stats': variables.get('batch_stats', {})}


def create_train_state(variables: Variables,
                       tx: optax.GradientTransformation) -> TrainState:
  """A fresh state from a host copy of `variables`: the jitted steps donate
  their state, which must never alias the caller's arrays (e.g. M_o's, which
  every method starts from)."""
  variables = jax.device_get(variables)
  return TrainState(step=jnp.zeros((), jnp.int32),
                    params=variables['params'],
                    batch_stats=variables['batch_stats'],
                    opt_state=tx.init(variables['params']))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def forward(model: nn.Module, params, batch_stats, images, *, train: bool):
  """Logits and (in training mode) the updated BatchNorm statistics."""
  variables = {'params': params, 'batch_stats': batch_stats}
  if not train:
    return model.apply(variables, images, train=False), batch_stats
  logits, updates = model.apply(variables, images, train=True,
                                mutable=['batch_stats'])
  return logits, updates.get('batch_stats', batch_stats)


def apply_gradients(state: TrainState, grads, batch_stats,
                    tx: optax.GradientTransformation) -> TrainState:
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  return state.replace(step=state.step + 1,
                       params=optax.apply_updates(state.params, updates),
                       batch_stats=batch_stats, opt_state=opt_state)


def train_step(state: TrainState, batch: dict, *, model: nn.Module,
               tx: optax.GradientTransformation):
  """One SGD step on the batch-mean cross-entropy. Pure; jit it once."""
  chex.assert_rank(batch['image'], 4)
  chex.assert_shape(batch['label'], (batch['image'].shape[0],))

  def loss_fn(params):
    logits, batch_stats = forward(model, params, state.batch_stats,
                                  batch['image'], train=True)
    return cross_entropy(logits, batch['label']), (logits, batch_stats)

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  state = apply_gradients(state, grads, batch_stats, tx)
  accuracy = jnp.mean(jnp.argmax(logits, -1) == batch['label'])
  return state, {'loss': loss, 'accuracy': accuracy}


@functools.lru_cache(maxsize=64)
def jitted_train_step(model: nn.Module, recipe: Recipe) -> Callable:
  """The jitted step for (model, recipe); cached so sweeps compile once."""
  tx = make_optimizer(recipe)
  return jax.jit(functools.partial(train_step, model=model, tx=tx),
                 donate_argnums=0)


def many_step(step_fn: Callable, count: int) -> Callable:
  """`count` independent runs of `step_fn(state, batch) -> (state, metrics)`
  advanced in one compiled call: `(states, batches) -> (states, metrics)`,
  tuples of `count`. On a CPU the copies are unrolled in one XLA program,
  so each run computes exactly the ops it computes alone (bit-identical,
  tested) and XLA:CPU runs them side by side on the cores one small step
  leaves idle; on an accelerator they are stacked and vmapped (one kernel
  per layer for all runs). `step_fn` is un-jitted and pure; states are
  donated.
  """
  if count < 1:
    raise ValueError(f'many_step: count={count} must be >= 1')
  if jax.default_backend() == 'cpu':
    def call(states, batches):
      outs = [step_fn(s, b) for s, b in zip(states, batches)]
      return tuple(o[0] for o in outs), tuple(o[1] for o in outs)
  else:
    def call(states, batches):
      stack = lambda xs: jax.tree.map(lambda *a: jnp.stack(a), *xs)
      new, metrics = jax.vmap(step_fn)(stack(states), stack(batches))
      unstack = lambda t: tuple(jax.tree.map(lambda a, i=i: a[i], t)
                                for i in range(count))
      return unstack(new), unstack(metrics)
  return jax.jit(call, donate_argnums=0)


@functools.lru_cache(maxsize=64)
def jitted_train_step_many(model: nn.Module, recipe: Recipe,
                           count: int) -> Callable:
  """`many_step` of `train_step` for (model, recipe, count); cached."""
  tx = make_optimizer(recipe)
  return many_step(functools.partial(train_step, model=model, tx=tx), count)


def run_many(step_fn: Callable, states: tuple, make_batches: Callable,
             steps: int, *, what: str) -> list:
  """`run_steps` for the runs of a `many_step` call: `steps` calls of
  `step_fn(states, make_batches(i))`; returns, per run, its state or the
  `FloatingPointError` it diverged with (one run's NaN never stops the
  others; each is checked after the last step, and every
  `parallel.sync_every()` steps where several CPU devices need the sync)."""
  sync_every = parallel.sync_every()
  metrics = ()
  for i in range(steps):
    states, metrics = step_fn(states, make_batches(i))
    if sync_every and (i + 1) % sync_every == 0:
      jax.block_until_ready(metrics)
  host = jax.device_get([{**m, 'parameter_norm': _global_norm(s.params)}
                         for s, m in zip(states, metrics)])
  out = []
  for j, (state, m) in enumerate(zip(states, host)):
    try:
      check_finite(m, steps, f'{what} (run {j + 1} of {len(states)})')
      out.append(state)
    except FloatingPointError as e:
      out.append(e)
  return out


def index_batches(n: int, batch_size: int, rng: np.random.Generator
                  ) -> Iterator[np.ndarray]:
  """Endless fixed-size batches of row indices, reshuffled every epoch.

  When n < batch_size, batches are drawn with replacement (a batch of the
  tiny set, mean loss unchanged in expectation), so shapes never change.
  """
  if n <= 0:
    raise ValueError('cannot draw batches from an empty set of samples')
  while True:
    if n < batch_size:
      yield rng.integers(0, n, batch_size)
      continue
    order = rng.permutation(n)
    for start in range(0, n - batch_size + 1, batch_size):
      yield order[start:start + batch_size]


def check_finite(metrics: dict, step: int, what: str) -> None:
  for name, value in metrics.items():
    if not np.isfinite(value):
      raise FloatingPointError(
          f'{what}: {name} became {value} at step {step}. Training diverged; '
          'lower the learning rate (--config.recipe.learning_rate) or check '
          'the inputs for NaNs.')


_global_norm = jax.jit(optax.global_norm)


def run_steps(step_fn: Callable, state: TrainState, make_batch: Callable,
              steps: int, *, what: str, sync_every: int | None = None,
              progress: Callable[[int], None] | None = None,
              curve: 'curves.Curve | None' = None):
  """Runs `steps` calls of `step_fn(state, make_batch(i))` in a Python loop.

  Blocks every `sync_every` steps (default `parallel.sync_every()`: 10 on
  several CPU devices, where queued sharded steps can deadlock in an
  all-reduce; 0, never, on one CPU device or an accelerator, so the host runs
  ahead and the device never waits) and raises on NaN/inf metrics there and
  after the last step.
  `curve` (`unlearnjax.curves`) records the step's metrics and evaluates
  `state.variables` at its points (blocking there too); it never changes
  the run.
  """
  metrics = {}
  if sync_every is None:
    sync_every = parallel.sync_every()
  if curve is not None and curve.start == 0:
    curve.record(0, {}, state.variables)
  for i in range(steps):
    state, step_metrics = step_fn(state, make_batch(i))
    metrics = step_metrics
    if (sync_every and (i + 1) % sync_every == 0) or i + 1 == steps:
      metrics = jax.device_get({**metrics,
                                'parameter_norm': _global_norm(state.params)})
      check_finite(metrics, i + 1, what)
      if progress is not None:
        progress(i + 1)
    elif progress is not None and not sync_every:
      progress(i + 1)  # steps dispatched: no wait for the device
    if curve is not None and curve.due(i + 1, steps):
      curve.record(i + 1, step_metrics, state.variables)
  if curve is not None:
    curve.flush()
  return state, jax.device_get(metrics)


def _run_inputs(model, recipe, split, key, indices, variables, what):
  """(rows, starting variables, batch order) of one training run, from its
  key as `fit` has always split it (init key; batch-order seed): shared by
  `fit` and `fit_many`, so both draw the same run."""
  init_key, order_key = jax.random.split(key)
  rows = np.arange(len(split)) if indices is None else np.asarray(indices)
  if rows.size == 0:
    raise ValueError(f'{what}: the training set is empty')
  if variables is None:
    variables = init_variables(model, init_key, split.image_shape)
  seed = int(jax.random.randint(order_key, (), 0, 2**31 - 1))
  return rows, variables, index_batches(rows.size, recipe.batch_size,
                                        np.random.default_rng(seed))


def fit(model: nn.Module, recipe: Recipe, split: Split, key: jax.Array, *,
        indices: np.ndarray | None = None, variables: Variables | None = None,
        what: str = 'training', checkpoint_dir: str | None = None,
        checkpoint_every: int = 500, show_progress: bool = False,
        curve: 'curves.Curve | None' = None) -> Variables:
  """Trains `model` with `recipe` on `split[indices]`; returns its variables.

  Args:
    model: a linen classifier `(x, train) -> logits`.
    recipe: steps, batch size and optimiser settings.
    split: the data; `indices` (rows) restricts it (e.g. the retain set).
    key: PRNG key; initialises the model (unless `variables` is given) and
      seeds the batch order.
    variables: start from these instead of a fresh initialisation
      (fine-tuning).
    checkpoint_dir: if set, the full train state is saved there every
      `checkpoint_every` steps and a rerun resumes from the latest one (same
      batches, same schedule: the result equals an uninterrupted run).
    show_progress: a progress bar over the steps.
    curve: records the training (`curves.Curve`, its steps counted from the
      start of the recipe, a resumed run's from its checkpoint's step).
  """
  parallel.check_batch_size(recipe.batch_size)
  rows, variables, batches = _run_inputs(model, recipe, split, key, indices,
                                         variables, what)
  tx = make_optimizer(recipe)
  state = create_train_state(variables, tx)
  start = 0
  restored = (checkpoint.restore_if_valid(checkpoint_dir, state)
              if checkpoint_dir else None)
  if restored is not None:
    state, meta = restored
    start = int(meta['step'])
  state = parallel.replicate(state)
  step_fn = jitted_train_step(model, recipe)
  for _ in range(start):  # the batches the checkpointed steps already saw
    next(batches)
  images, labels = split.images, split.labels

  def make_batch(_):
    take = rows[next(batches)]
    return parallel.shard_batch({'image': images[take], 'label': labels[take]})

  bar = tqdm.tqdm(total=recipe.steps, initial=start, desc=what, leave=False,
                  disable=not show_progress or jax.process_index() != 0)
  segment = checkpoint_every if checkpoint_dir else recipe.steps
  done = start
  while done < recipe.steps:
    steps = min(segment, recipe.steps - done)
    state, _ = run_steps(step_fn, state, make_batch, steps, what=what,
                         progress=lambda i, base=done: bar.update(
                             base + i - bar.n),
                         curve=None if curve is None else curve.after(done))
    done += steps
    if checkpoint_dir and done < recipe.steps:
      checkpoint.save(checkpoint_dir, jax.device_get(state), {'step': done},
                      step=done)
  bar.close()
  return jax.device_get(state.variables)


def fit_many(model: nn.Module, recipe: Recipe, split: Split,
             keys: list, *, indices: list | None = None,
             variables: list | None = None, what: str = 'training') -> list:
  """`[fit(model, recipe, split, keys[j], indices=indices[j],
  variables=variables[j]) for j]` with the runs advanced together
  (`many_step`, `tuning.runs_per_call` runs per compiled call): the same
  keys, initialisations and batch orders as `fit`, so on a CPU the same
  variables bit for bit (tested). No checkpoints or curves: for runs short
  enough to redo. Returns, per run, its variables or the
  `FloatingPointError` it diverged with.
  """
  from unlearnjax import tuning  # pylint: disable=g-import-not-at-top
  count = len(keys)
  indices = [None] * count if indices is None else list(indices)
  variables = [None] * count if variables is None else list(variables)
  if not len(indices) == len(variables) == count:
    raise ValueError(f'fit_many: {count} keys, {len(indices)} index sets and '
                     f'{len(variables)} starting points; give one per run')
  parallel.check_batch_size(recipe.batch_size)
  out = []
  per_call = tuning.runs_per_call(count)
  tx = make_optimizer(recipe)
  for start in range(0, count, per_call):
    chunk = range(start, min(count, start + per_call))
    states, orders, rows_of = [], [], []
    for j in chunk:
      rows, start_vars, order = _run_inputs(
          model, recipe, split, keys[j], indices[j], variables[j],
          f'{what} (run {j + 1})')
      states.append(parallel.replicate(create_train_state(start_vars, tx)))
      orders.append(order)
      rows_of.append(rows)
    images, labels = split.images, split.labels

    def make_batches(_):
      batches = []
      for rows, order in zip(rows_of, orders):
        take = rows[next(order)]
        batches.append(parallel.shard_batch({'image': images[take],
                                             'label': labels[take]}))
      return tuple(batches)

    step_fn = jitted_train_step_many(model, recipe, len(chunk))
    for result in run_many(step_fn, tuple(states), make_batches,
                           recipe.steps, what=what):
      out.append(result if isinstance(result, FloatingPointError)
                 else jax.device_get(result.variables))
  return out


@functools.lru_cache(maxsize=64)
def _jitted_logits(model: nn.Module) -> Callable:
  return jax.jit(lambda variables, images: model.apply(
      variables, images, train=False))


def predict_logits(model: nn.Module, variables: Variables, images: np.ndarray,
                   batch_size: int = 1024) -> np.ndarray:
  """Evaluation-mode logits for all `images`, in fixed-size padded batches."""
  n = images.shape[0]
  if n == 0:
    return np.zeros((0, 0), np.float32)
  fn = _jitted_logits(model)
  variables = parallel.replicate(variables)
  outputs = []
  for (chunk,), mask in padded_chunks((images,),
                                      parallel.shape_bucket(n, batch_size)):
    logits = fn(variables, parallel.shard_batch(chunk))
    outputs.append(np.asarray(jax.device_get(logits))[mask > 0])
  return np.concatenate(outputs)


def predict(model: nn.Module, variables: Variables, images: np.ndarray,
            batch_size: int = 1024) -> np.ndarray:
  """Predicted classes (argmax of the logits)."""
  if images.shape[0] == 0:
    return np.zeros((0,), np.int32)
  return predict_logits(model, variables, images, batch_size).argmax(-1)


def accuracy(model: nn.Module, variables: Variables, split: Split,
             batch_size: int = 1024) -> float:
  """Share of `split` predicted as its labels (NaN for an empty split)."""
  if len(split) == 0:
    return math.nan
  return float(np.mean(predict(model, variables, split.images, batch_size)
                       == split.labels))
