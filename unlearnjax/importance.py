"""Parameter importances for the SSD family, as one piece (SPEC.md, "SSD/LF/XLF").

Every importance is a mean over samples of a per-parameter magnitude of the
gradient of one scalar per example, model in evaluation mode:

* `fisher` (SSD; Foster et al. 2023 §3): (∂ℓ(x, y)/∂θ_i)², the diagonal of
  the empirical Fisher information.
* `lf` (Loss-Free SSD; Foster et al. 2024b; Potion eq. 3): |∂‖f(x)‖₂²/∂θ_i|,
  f the logits; no labels.
* `xlf` (Potion §3.1, eq. 4): |∂‖f(x)‖₂^w/∂θ_i| with w = `output_norm_power`
  (default 1), which thins the heavy tails of LF's squared norm.

Two estimators (SPEC.md):

* `exact`: the mean over samples of per-sample magnitudes (`vmap(grad)`).
* `per_batch`: what the reference implementations compute: the mean over
  minibatches (last one partial) of the magnitude of the gradient of the
  *batch-mean* scalar. Batch-size and order dependent; equal to `exact` at
  batch 1. The authors' loaders shuffle (`SubsetRandomSampler` in Goel's
  benchmark and Potion, SSD's `DataLoader(shuffle=True)`): give
  `shuffle_key` to draw the batches from a permutation of the rows, as they
  do; without it the rows are walked in order (what the reference fixtures,
  `tests/fixtures/reference/`, fix so that they can be reproduced).

Adding an importance is one entry in `IMPORTANCES`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from unlearnjax import grads as grads_lib
from unlearnjax import parallel
from unlearnjax import tuning
from unlearnjax.training import Variables

ESTIMATORS = ('exact', 'per_batch')


@dataclasses.dataclass(frozen=True)
class Importance:
  """How one importance turns a model and an example into a magnitude.

  Attributes:
    scalar: (logits (C,), label, output_norm_power) -> the example's scalar.
    magnitude: the elementwise map applied to its gradient (square or abs).
    uses_labels: whether `scalar` reads the label.
  """
  scalar: Callable[[jax.Array, jax.Array, float], jax.Array]
  magnitude: Callable[[jax.Array], jax.Array]
  uses_labels: bool


def _cross_entropy(logits, label, power):
  del power
  return optax.softmax_cross_entropy_with_integer_labels(logits, label)


def _output_norm(fixed_power: float | None):
  def scalar(logits, label, power):
    del label
    w = fixed_power if fixed_power is not None else power
    squared_norm = jnp.sum(jnp.square(logits))
    # ‖f‖^w has no gradient at f = 0 for w < 2 (e.g. a zero-padded row of a
    # model with zero biases); take 0 there, without NaNs in the backward pass.
    positive = squared_norm > 0
    safe = jnp.where(positive, squared_norm, 1.0)
    return jnp.where(positive, safe ** (w / 2), 0.0)
  return scalar


IMPORTANCES: dict[str, Importance] = {
    'fisher': Importance(_cross_entropy, jnp.square, True),
    'lf': Importance(_output_norm(2.0), jnp.abs, False),
    'xlf': Importance(_output_norm(None), jnp.abs, False),
}


def get_importance(name: str) -> Importance:
  if name not in IMPORTANCES:
    raise ValueError(f'Unknown importance {name!r}; valid names: '
                     f'{", ".join(IMPORTANCES)}.')
  return IMPORTANCES[name]


@functools.lru_cache(maxsize=64)
def _per_sample_fn(model: nn.Module, name: str, power: float) -> Callable:
  kind = get_importance(name)

  def fn(variables, x, y):
    def example(params, image, label):
      logits = model.apply({'params': params,
                            'batch_stats': variables['batch_stats']},
                           image[None], train=False)[0]
      return kind.scalar(logits, label, power)
    g = grads_lib.per_sample_grads(example, variables['params'], x, y)
    return jax.tree.map(kind.magnitude, g)

  return fn


@functools.lru_cache(maxsize=64)
def _per_batch_fn(model: nn.Module, name: str, power: float) -> Callable:
  """(acc, variables, x, y, mask) -> acc + per-device gradients of the masked
  *sum* of the rows' scalars, stacked on a device axis (shard_map, no
  collective: an all-reduce on simulated CPU devices deadlocked in CI).

  A batch is summed over calls of a few rows each (`tuning`): the gradient
  of a sum is the sum of the gradients, and XLA:CPU's backward convolutions
  are much faster per row on small calls. `acc` is donated. The caller sums
  the devices' rows and divides by the batch size: the gradient of the
  batch mean."""
  kind = get_importance(name)

  def local(acc, variables, x, y, mask):
    def rows_sum(params):
      logits = model.apply({'params': params,
                            'batch_stats': variables['batch_stats']}, x,
                           train=False)
      values = jax.vmap(kind.scalar, in_axes=(0, 0, None))(logits, y, power)
      return jnp.sum(jnp.where(mask > 0, values, 0.0))
    grads = jax.grad(rows_sum)(variables['params'])
    return jax.tree.map(lambda a, g: a + g[None], acc, grads)

  data = P(parallel.DATA_AXIS)
  return jax.jit(jax.shard_map(local, mesh=parallel.data_mesh(),
                               in_specs=(data, P(), data, data, data),
                               out_specs=data, check_vma=False),
                 donate_argnums=0)


def parameter_importance(model: nn.Module, variables: Variables,
                         images: np.ndarray, labels: np.ndarray, *,
                         importance: str = 'fisher', estimator: str = 'exact',
                         batch_size: int = 512,
                         output_norm_power: float = 1.0,
                         shuffle_key: jax.Array | None = None):
  """Mean importance of every parameter over (images, labels): a params tree.

  Args:
    importance: 'fisher', 'lf' or 'xlf' (`IMPORTANCES`).
    estimator: 'exact' (per-sample, vmap) or 'per_batch' (reference code).
    batch_size: minibatch of `per_batch`; chunk (at most 256) of `exact`.
    output_norm_power: XLF's w (ignored by the others).
    shuffle_key: `per_batch` only: batches are cut from the rows permuted by
      this key (the authors' shuffling loaders); None walks them in order.
      `exact` is a mean over samples and does not depend on the order.
  """
  get_importance(importance)
  if images.shape[0] == 0:
    raise ValueError('parameter_importance: no samples')
  if estimator == 'per_batch' and shuffle_key is not None:
    order = np.asarray(jax.random.permutation(shuffle_key, images.shape[0]))
    images, labels = images[order], labels[order]
  power = float(output_norm_power)
  if estimator == 'exact':
    chunk = tuning.per_sample_rows(model, variables, images.shape[1:])
    return grads_lib.mean_over_samples(
        _per_sample_fn(model, importance, power), variables, images, labels,
        min(batch_size, chunk))
  if estimator == 'per_batch':
    return _mean_over_batches(model, importance, power, variables, images,
                              labels, batch_size)
  raise ValueError(f'Unknown importance estimator {estimator!r}; valid: '
                   f'{ESTIMATORS}')


def _mean_over_batches(model, name, power, variables, images, labels,
                       batch_size):
  """Mean over batches (in order, the last one partial) of the magnitude of
  the batch-mean gradient; each batch summed over calls of `rows` rows per
  device (`tuning.batch_gradient_rows`; only the last call of the last batch
  is padded)."""
  n = images.shape[0]
  fn = _per_batch_fn(model, name, power)
  magnitude = get_importance(name).magnitude
  batch_size = min(batch_size, n)
  devices = jax.device_count()
  rows = devices * tuning.batch_gradient_rows(
      model, variables, images.shape[1:], -(-batch_size // devices))
  replicated = parallel.replicate(variables)
  zeros = jax.tree.map(lambda p: np.zeros((devices, *np.shape(p)), np.float32),
                       variables['params'])
  total, count = None, 0
  for start in range(0, n, batch_size):
    x_batch = images[start:start + batch_size]
    y_batch = labels[start:start + batch_size]
    acc = parallel.shard_batch(zeros)
    # Sets shorter than a call share few compiled shapes (powers of two).
    call_rows = parallel.shape_bucket(len(y_batch), rows)
    for (x, y), mask in grads_lib.padded_chunks((x_batch, y_batch),
                                                call_rows):
      acc = fn(acc, replicated, *parallel.shard_batch((x, y, mask)))
    per_device = parallel.gather_to_host(acc)
    mean_grad = jax.tree.map(lambda g: np.sum(g, axis=0) / len(y_batch),
                             per_device)
    part = jax.tree.map(lambda g: np.asarray(magnitude(g)), mean_grad)
    total = part if total is None else jax.tree.map(np.add, total, part)
    count += 1
  return jax.tree.map(lambda t: t / count, total)


def retain_from_train(importance_train, n_train: int, importance_forget,
                      n_forget: int):
  """The exact (per-sample mean) importance of S_tr \\ S_f from those of S_tr
  and S_f: (n_train·I_train − n_forget·I_forget) / (n_train − n_forget), in
  float64, clipped at 0 (rounding can take a parameter that only S_f moves a
  hair below it), returned as float32. Exact means only: a per-batch
  estimate does not decompose."""
  n_retain = n_train - n_forget
  if n_retain <= 0:
    raise ValueError(f'retain_from_train: S_f ({n_forget} rows) leaves no '
                     f'retain rows of S_tr ({n_train})')

  def leaf(train, forget):
    total = (np.float64(n_train) * np.asarray(train, np.float64)
             - np.float64(n_forget) * np.asarray(forget, np.float64))
    return np.maximum(total / n_retain, 0.0).astype(np.float32)

  return jax.tree.map(leaf, importance_train, importance_forget)


# SSD's names (Foster et al. 2023), kept for the corrective benchmark.
def fisher_diagonal_exact(model: nn.Module, variables: Variables,
                          images: np.ndarray, labels: np.ndarray,
                          chunk_size: int = 256):
  """Mean over samples of (∂ℓ(x_i, y_i)/∂θ)², a params-shaped pytree."""
  return grads_lib.mean_over_samples(_per_sample_fn(model, 'fisher', 1.0),
                                     variables, images, labels, chunk_size)


def fisher_diagonal_per_batch(model: nn.Module, variables: Variables,
                              images: np.ndarray, labels: np.ndarray,
                              batch_size: int = 512):
  """Mean over minibatches (in order, last one partial) of (∂ mean-loss/∂θ)²."""
  if images.shape[0] == 0:
    raise ValueError('fisher_diagonal_per_batch: no samples')
  return _mean_over_batches(model, 'fisher', 1.0, variables, images, labels,
                            batch_size)


def fisher_diagonal(model: nn.Module, variables: Variables, images, labels, *,
                    estimator: str = 'exact', batch_size: int = 512,
                    shuffle_key: jax.Array | None = None):
  """SSD's importance with the named estimator (`exact` or `per_batch`)."""
  return parameter_importance(model, variables, images, labels,
                              importance='fisher', estimator=estimator,
                              batch_size=batch_size, shuffle_key=shuffle_key)
