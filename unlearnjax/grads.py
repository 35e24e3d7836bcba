"""Per-sample gradients: the one tested place for `vmap(grad)`.

Write the loss of ONE example, `example_loss(params, image, label) -> scalar`
(model in evaluation mode: BatchNorm statistics fixed, so the per-sample
gradients do not depend on the other samples of the chunk), and these
functions batch it with `jax.vmap(jax.grad(...))`, chunked over the data so
memory stays bounded. Chunks are padded to one fixed size (one compile) and
padded rows are masked out of every reduction.
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from unlearnjax import parallel

ExampleLoss = Callable[[object, jax.Array, jax.Array], jax.Array]


def example_cross_entropy(model: nn.Module, batch_stats) -> ExampleLoss:
  """Cross-entropy of one (image, label), model in evaluation mode."""

  def loss(params, image, label):
    logits = model.apply({'params': params, 'batch_stats': batch_stats},
                         image[None], train=False)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, label[None])[0]

  return loss


def per_sample_grads(example_loss: ExampleLoss, params, images, labels):
  """Gradient of each example's loss: a params pytree with a leading N axis."""
  return jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0))(
      params, images, labels)


def per_sample_input_grads(example_loss: ExampleLoss, params, images, labels):
  """∇_x of each example's loss, shaped like `images`."""
  return jax.vmap(jax.grad(example_loss, argnums=1), in_axes=(None, 0, 0))(
      params, images, labels)


def padded_chunks(arrays, chunk_size: int, padded_size: int | None = None):
  """Consecutive chunks of `chunk_size` rows of every array in `arrays`.

  Each chunk is zero-padded to a fixed number of rows (`padded_size`, default
  `chunk_size`, rounded up to the device count), so one compiled function
  serves every chunk; yields (chunk arrays, float32 mask of the real rows).
  """
  n = arrays[0].shape[0]
  padded = parallel.round_up_to_devices(max(chunk_size, padded_size or 0))
  for start in range(0, n, chunk_size):
    size = min(chunk_size, n - start)
    chunk = []
    for a in arrays:
      part = a[start:start + size]
      if padded > size:
        part = np.concatenate(
            [part, np.zeros((padded - size, *part.shape[1:]), part.dtype)])
      chunk.append(part)
    yield chunk, (np.arange(padded) < size).astype(np.float32)


def mean_over_samples(per_sample_fn: Callable, params, images: np.ndarray,
                      labels: np.ndarray, chunk_size: int = 256):
  """Mean over all samples of `per_sample_fn(params, images_chunk, labels_chunk)`.

  `per_sample_fn` maps a chunk (C, ...) to a pytree whose leaves have a
  leading C axis (e.g. squared per-sample gradients); the mean is taken over
  the real samples only. One jitted call per chunk, fixed chunk shape.
  """
  n = images.shape[0]
  if n == 0:
    raise ValueError('mean_over_samples: no samples')
  reduce_fn = _jitted_masked_sum(per_sample_fn)
  params = parallel.replicate(params)
  total = None
  for (x, y), mask in padded_chunks((images, labels),
                                    parallel.shape_bucket(n, chunk_size)):
    part = reduce_fn(params, *parallel.shard_batch((x, y, mask)))
    total = part if total is None else jax.tree.map(jnp.add, total, part)
  # One partial sum per device (leading axis); summed here, on the host.
  per_device = parallel.gather_to_host(total)
  return jax.tree.map(lambda t: np.sum(t, axis=0) / n, per_device)


@functools.lru_cache(maxsize=64)
def _jitted_masked_sum(per_sample_fn: Callable) -> Callable:
  """Each device reduces its own rows (shard_map) to a (1, ...) partial sum.

  Per-sample work is independent per row, so it runs per device: letting the
  SPMD partitioner split a vmapped convolution's batch axis gave wrong
  per-sample gradients on XLA:CPU (jax 0.10.2), which the tests guard.
  No collective: the per-device partials come back stacked on a device axis
  and the caller sums them, so a slow device never holds the others at a
  rendezvous. `check_vma=False`: with it on, grad w.r.t. the replicated
  params would insert a psum over devices inside every per-sample gradient.
  """

  def local_sum(params, x, y, mask):
    values = per_sample_fn(params, x, y)
    def masked_sum(v):
      keep = (mask > 0).reshape((-1,) + (1,) * (v.ndim - 1))
      # where, not a product: a padded row's NaN must not reach the sum.
      return jnp.sum(jnp.where(keep, v.astype(jnp.float32), 0.0), axis=0)[None]

    return jax.tree.map(masked_sum, values)

  data = P(parallel.DATA_AXIS)
  return jax.jit(jax.shard_map(local_sum, mesh=parallel.data_mesh(),
                               in_specs=(P(), data, data, data),
                               out_specs=data, check_vma=False))
