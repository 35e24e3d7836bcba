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
  """(variables, x, y, mask) -> per-device gradients of the masked *sum* of
  the batch's scalars, stacked on a device axis (shard_map, no collective:
  an all-reduce on simulated CPU devices deadlocked in CI). The caller sums
  them and divides by the batch size: the gradient of the batch mean."""
  kind = get_importance(name)

  def local(variables, x, y, mask):
    def batch_sum(params):
      logits = model.apply({'params': params,
                            'batch_stats': variables['batch_stats']}, x,
                           train=False)
      values = jax.vmap(kind.scalar, in_axes=(0, 0, None))(logits, y, power)
      return jnp.sum(jnp.where(mask > 0, values, 0.0))
    grads = jax.grad(batch_sum)(variables['params'])
    return jax.tree.map(lambda g: g[None], grads)

  data = P(parallel.DATA_AXIS)
  return jax.jit(jax.shard_map(local, mesh=parallel.data_mesh(),
                               in_specs=(P(), data, data, data),
                               out_specs=data, check_vma=False))


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
    return grads_lib.mean_over_samples(
        _per_sample_fn(model, importance, power), variables, images, labels,
        min(batch_size, 256))
  if estimator == 'per_batch':
    return _mean_over_batches(_per_batch_fn(model, importance, power),
                              get_importance(importance).magnitude,
                              variables, images, labels, batch_size)
  raise ValueError(f'Unknown importance estimator {estimator!r}; valid: '
                   f'{ESTIMATORS}')


def _mean_over_batches(fn, magnitude, variables, images, labels, batch_size):
  n = images.shape[0]
  variables = parallel.replicate(variables)
  total, count = None, 0
  batch_size = min(batch_size, n)
  # Pad to a power of two: forget sets of many sizes share few compilations.
  padded = parallel.shape_bucket(batch_size, 1 << 30)
  for (x, y), mask in grads_lib.padded_chunks((images, labels), batch_size,
                                              padded):
    per_device = parallel.gather_to_host(
        fn(variables, *parallel.shard_batch((x, y, mask))))
    mean_grad = jax.tree.map(lambda g: np.sum(g, axis=0) / mask.sum(),
                             per_device)
    part = jax.tree.map(lambda g: np.asarray(magnitude(g)), mean_grad)
    total = part if total is None else jax.tree.map(np.add, total, part)
    count += 1
  return jax.tree.map(lambda t: t / count, total)


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
  return _mean_over_batches(_per_batch_fn(model, 'fisher', 1.0), jnp.square,
                            variables, images, labels, batch_size)


def fisher_diagonal(model: nn.Module, variables: Variables, images, labels, *,
                    estimator: str = 'exact', batch_size: int = 512,
                    shuffle_key: jax.Array | None = None):
  """SSD's importance with the named estimator (`exact` or `per_batch`)."""
  return parameter_importance(model, variables, images, labels,
                              importance='fisher', estimator=estimator,
                              batch_size=batch_size, shuffle_key=shuffle_key)
