"""Parameter importances for the SSD family (Foster et al. 2023, §3).

The diagonal of the empirical Fisher information, I_i = E[(∂ℓ/∂θ_i)²], with
the model in evaluation mode. Two estimators (SPEC.md, "SSD"):

* `exact`: the mean over samples of squared per-sample gradients (vmap).
* `per_batch`: what the authors' code (`ssd.py`) and the corrective-benchmark
  code compute: the mean over minibatches of the squared gradient of the
  batch-mean loss. Batch-size dependent; equal to `exact` at batch size 1.
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from unlearnjax import grads as grads_lib
from unlearnjax import parallel
from unlearnjax.training import Variables

ESTIMATORS = ('exact', 'per_batch')


@functools.lru_cache(maxsize=64)
def _squared_grads_fn(model: nn.Module) -> Callable:

  def fn(variables, x, y):
    loss = grads_lib.example_cross_entropy(model, variables['batch_stats'])
    g = grads_lib.per_sample_grads(loss, variables['params'], x, y)
    return jax.tree.map(jnp.square, g)

  return fn


def fisher_diagonal_exact(model: nn.Module, variables: Variables,
                          images: np.ndarray, labels: np.ndarray,
                          chunk_size: int = 256):
  """Mean over samples of (∂ℓ(x_i, y_i)/∂θ)², a params-shaped pytree."""
  return grads_lib.mean_over_samples(_squared_grads_fn(model), variables,
                                     images, labels, chunk_size)


@functools.lru_cache(maxsize=64)
def _batch_grad_squared_fn(model: nn.Module) -> Callable:

  def fn(variables, x, y, mask):
    def batch_loss(params):
      logits = model.apply({'params': params,
                            'batch_stats': variables['batch_stats']}, x,
                           train=False)
      losses = -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None],
                                    axis=-1)[:, 0]
      return jnp.sum(mask * losses) / jnp.sum(mask)
    return jax.tree.map(jnp.square, jax.grad(batch_loss)(variables['params']))

  return jax.jit(fn)


def fisher_diagonal_per_batch(model: nn.Module, variables: Variables,
                              images: np.ndarray, labels: np.ndarray,
                              batch_size: int = 512):
  """Mean over minibatches (in order, last one partial) of (∂ mean-loss/∂θ)²."""
  n = images.shape[0]
  if n == 0:
    raise ValueError('fisher_diagonal_per_batch: no samples')
  fn = _batch_grad_squared_fn(model)
  variables = parallel.replicate(variables)
  total, count = None, 0
  batch_size = min(batch_size, n)
  # Pad to a power of two: forget sets of many sizes share few compilations.
  padded = parallel.shape_bucket(batch_size, 1 << 30)
  for (x, y), mask in grads_lib.padded_chunks((images, labels), batch_size,
                                              padded):
    part = fn(variables, *parallel.shard_batch((x, y, mask)))
    total = part if total is None else jax.tree.map(jnp.add, total, part)
    count += 1
  return jax.device_get(jax.tree.map(lambda t: t / count, total))


def fisher_diagonal(model: nn.Module, variables: Variables, images, labels, *,
                    estimator: str = 'exact', batch_size: int = 512):
  """Dispatches to the named estimator (`exact` or `per_batch`)."""
  if estimator == 'exact':
    return fisher_diagonal_exact(model, variables, images, labels,
                                 chunk_size=min(batch_size, 256))
  if estimator == 'per_batch':
    return fisher_diagonal_per_batch(model, variables, images, labels,
                                     batch_size)
  raise ValueError(f'Unknown importance estimator {estimator!r}; valid: '
                   f'{ESTIMATORS}')
