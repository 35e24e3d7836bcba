"""Per-sample gradients of M_o against S_f, for the gradient scores.

Each sample's gradient of its own cross-entropy (given label, M_o in
evaluation mode: `grads.example_cross_entropy`, batched with
`grads.per_sample_grads`, i.e. `vmap(grad)`), flattened over all parameters.
Models with more than `SKETCH_ABOVE` parameters are count-sketched to
`SKETCH_DIM` coordinates (each parameter added, with a random sign, to one
random coordinate; a fixed key, so every run sketches alike): inner products
and so cosines are preserved in expectation (Charikar et al. 2002), and the
S_f reference matrix stays |S_f| × SKETCH_DIM instead of |S_f| × |θ|.

One pass over a split gives, per sample, x·S (S = Σ_{f∈S_f} g_f), ‖x‖² and
the cosines to every unit g_f: what both gradient scores need, with their
leave-one-out corrections done on the host (`_common`).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from unlearnjax import grads
from unlearnjax.data.split import Split
from unlearnjax.expansion import _common

if TYPE_CHECKING:
  from unlearnjax.unlearn.base import UnlearnTask

SKETCH_ABOVE = 2**20   # parameters; larger models are count-sketched
SKETCH_DIM = 2**16
CHUNK_SIZE = 128


def _num_params(params) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def sketch_for(params, sketch_dim: int | None = None):
  """None (exact, flattened gradients) or (buckets, signs) of a count sketch
  into `sketch_dim` coordinates (default: SKETCH_DIM above SKETCH_ABOVE
  parameters)."""
  n = _num_params(params)
  if sketch_dim is None:
    sketch_dim = SKETCH_DIM if n > SKETCH_ABOVE else 0
  if not sketch_dim:
    return None
  bucket_key, sign_key = jax.random.split(jax.random.key(0))
  buckets = jax.random.randint(bucket_key, (n,), 0, sketch_dim)
  signs = jax.random.rademacher(sign_key, (n,), jnp.float32)
  return buckets, signs, sketch_dim


@functools.lru_cache(maxsize=16)
def _jitted_features(model: nn.Module, sketch_dim: int) -> callable:
  """(params, batch_stats, images, labels, sketch) -> (C, D) gradients."""

  def features(params, batch_stats, images, labels, sketch):
    loss = grads.example_cross_entropy(model, batch_stats)
    per_sample = grads.per_sample_grads(loss, params, images, labels)
    flat = jnp.concatenate(
        [g.reshape(g.shape[0], -1).astype(jnp.float32)
         for g in jax.tree.leaves(per_sample)], axis=1)
    if sketch is not None:
      buckets, signs = sketch
      flat = jax.vmap(lambda v: jnp.zeros((sketch_dim,), jnp.float32).at[
          buckets].add(signs * v))(flat)
    # A padded row (all zeros) can give NaN gradients: never let them out.
    return jnp.where(jnp.isfinite(flat), flat, 0.0)

  return jax.jit(features)


@functools.lru_cache(maxsize=16)
def _jitted_statistics(model: nn.Module, sketch_dim: int) -> callable:
  features_fn = _jitted_features(model, sketch_dim)

  def statistics(params, batch_stats, images, labels, sketch, reference_unit,
                 reference_sum):
    x = features_fn(params, batch_stats, images, labels, sketch)
    chex.assert_equal_shape_suffix((x, reference_unit), 1)
    sq_norm = jnp.sum(x * x, axis=1)
    norm = jnp.sqrt(jnp.maximum(sq_norm, _common.EPS**2))
    return x @ reference_sum, sq_norm, (x @ reference_unit.T) / norm[:, None]

  return jax.jit(statistics)


def _chunks(split: Split):
  n = len(split)
  return grads.padded_chunks((split.images, split.labels),
                             min(CHUNK_SIZE, max(n, 1)), CHUNK_SIZE)


def split_gradients(model: nn.Module, variables, split: Split, sketch
                    ) -> np.ndarray:
  """(N, D) per-sample gradients (or their sketches) of `split`, host."""
  sketch_dim = 0 if sketch is None else sketch[2]
  fn = _jitted_features(model, sketch_dim)
  arrays = None if sketch is None else sketch[:2]
  out = []
  for (x, y), mask in _chunks(split):
    g = fn(variables['params'], variables.get('batch_stats', {}), x, y, arrays)
    out.append(np.asarray(g)[mask > 0])
  return np.concatenate(out)


def reference(task: 'UnlearnTask', sketch_dim: int | None = None):
  """S_f's per-sample gradients (|S_f|, D), their sum and the sketch used,
  cached per (M_o, S_f)."""

  def compute():
    sketch = sketch_for(task.original['params'], sketch_dim)
    g = split_gradients(task.model, task.original, task.forget_split, sketch)
    return g, g.sum(axis=0), sketch

  return task.cached(f'expansion/gradients/reference/{sketch_dim}',
                     task.forget, compute)


def statistics(task: 'UnlearnTask', split: Split,
               sketch_dim: int | None = None) -> dict:
  """{'dot_sum': (N,) g·S, 'sq_norm': (N,) ‖g‖², 'cosines': (N, |S_f|),
  'sum_sq_norm': ‖S‖²} for every sample of `split`, cached per (M_o, S_f,
  split)."""

  def compute():
    ref, ref_sum, sketch = reference(task, sketch_dim)
    fn = _jitted_statistics(task.model, 0 if sketch is None else sketch[2])
    arrays = None if sketch is None else sketch[:2]
    unit = jnp.asarray(_common.unit_rows(ref))
    total = jnp.asarray(ref_sum)
    parts = []
    for (x, y), mask in _chunks(split):
      out = fn(task.original['params'], task.original.get('batch_stats', {}),
               x, y, arrays, unit, total)
      parts.append([np.asarray(o)[mask > 0] for o in out])
    dot_sum, sq_norm, cosines = (np.concatenate(p) for p in zip(*parts))
    chex.assert_shape(cosines, (len(split), task.forget.size))
    return {'dot_sum': dot_sum.astype(np.float64),
            'sq_norm': sq_norm.astype(np.float64), 'cosines': cosines,
            'sum_sq_norm': float(np.dot(ref_sum.astype(np.float64),
                                        ref_sum.astype(np.float64)))}

  return task.cached(f'expansion/gradients/{_common.split_digest(split)}/'
                     f'{sketch_dim}', task.forget, compute)
