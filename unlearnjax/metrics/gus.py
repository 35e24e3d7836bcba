"""Gaussian Unlearning Score and its membership test (Pawelczyk et al. 2024,
Alg. 3, Alg. 4 lines 10-25, App. A.1.4, Figs. 6-7; SPEC.md "GUS", "TPR@FPR").

For a poison z = (x_base + ξ_z, y) with ξ_z ~ N(0, ε²I):

    I_z = ⟨∇ₓℓ(x_base, y) / ‖∇ₓℓ(x_base, y)‖₂, ξ_z⟩ / ε.

If the model is independent of ξ_z (never trained on it, or perfectly
unlearned), I_z ~ N(0, 1) exactly, so GUS = mean_z I_z ~ N(0, 1/P). A model
that still depends on ξ shifts I away from 0; the sign can be negative
(training on x + ξ lowers the loss along ξ), so the distance from 0 is what
counts. The membership test thresholds |I| to tell the true ξ_z ("poison")
from fresh ξ̃ ~ N(0, ε²I) drawn independently of the model ("indep").

Per-sample input gradients are computed with the model in evaluation mode
(BatchNorm statistics fixed), by vmap, in fixed-size padded chunks that each
device processes on its own rows (shard_map, no collectives; see
`grads._jitted_masked_sum` for why the SPMD partitioner must not split a
vmapped conv).
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import PartitionSpec as P
from sklearn import metrics as sk_metrics

from unlearnjax import grads, parallel
from unlearnjax.training import Variables

# ----------------------------------------------------------------------------
# I_z: normalised input gradient · noise / ε
# ----------------------------------------------------------------------------


def _unit_input_grads(model: nn.Module, variables: Variables, images, labels):
  """∇ₓℓ/‖∇ₓℓ‖₂ per sample, flattened to (N, d); NaN rows where ∇ₓℓ == 0.

  Rescaled by max|g| before the norm so tiny float32 gradients do not
  underflow when squared.
  """
  loss = grads.example_cross_entropy(model, variables.get('batch_stats', {}))
  g = grads.per_sample_input_grads(loss, variables['params'], images, labels)
  g = g.reshape(g.shape[0], -1).astype(jnp.float32)
  scale = jnp.max(jnp.abs(g), axis=1, keepdims=True)
  g = g / jnp.where(scale > 0, scale, 1.0)
  norm = jnp.linalg.norm(g, axis=1, keepdims=True)
  return jnp.where(norm > 0, g / jnp.where(norm > 0, norm, 1.0), jnp.nan)


def _per_device(fn: Callable, num_sharded: int, num_replicated: int = 0
                ) -> Callable:
  """jit(shard_map(fn)): params replicated, then `num_sharded` row-sharded
  arrays, then `num_replicated` replicated ones; output row-sharded.
  `check_vma=False` as in grads._jitted_masked_sum."""
  data = P(parallel.DATA_AXIS)
  in_specs = (P(),) + (data,) * num_sharded + (P(),) * num_replicated
  return jax.jit(jax.shard_map(fn, mesh=parallel.data_mesh(),
                               in_specs=in_specs, out_specs=data,
                               check_vma=False))


@functools.lru_cache(maxsize=64)
def _jitted_poison_scores(model: nn.Module) -> Callable:
  """(variables, x, y, noise, 1/ε) -> I per row (C,), per device."""

  def local(variables, x, y, noise, inv_std):
    unit = _unit_input_grads(model, variables, x, y)
    return jnp.sum(unit * noise.reshape(noise.shape[0], -1), axis=1) * inv_std

  return _per_device(local, num_sharded=3, num_replicated=1)


@functools.lru_cache(maxsize=64)
def _jitted_fresh_scores(model: nn.Module, draws: int) -> Callable:
  """(variables, x, y, row, key, ε) -> I for `draws` fresh ξ̃ per row (C, draws).

  ξ̃ of sample `row` is drawn from fold_in(key, row): the same draws whatever
  the chunking or device count.
  """

  def local(variables, x, y, rows, key, noise_std):
    unit = _unit_input_grads(model, variables, x, y)

    def draw(row):
      return noise_std * jax.random.normal(jax.random.fold_in(key, row),
                                           (draws, unit.shape[1]))

    fresh = jax.vmap(draw)(rows)                       # (C, draws, d)
    return jnp.einsum('cd,ckd->ck', unit, fresh) / noise_std

  return _per_device(local, num_sharded=3, num_replicated=2)


def _per_sample(fn: Callable, variables: Variables, sharded: tuple,
                replicated: tuple, chunk_size: int) -> np.ndarray:
  """Runs fn(variables, *sharded_chunk, *replicated) over padded chunks of the
  rows and returns the real rows' outputs, concatenated (numpy)."""
  n = sharded[0].shape[0]
  variables = parallel.replicate(variables)
  replicated = parallel.replicate(replicated)
  outputs = []
  for chunk, mask in grads.padded_chunks(sharded,
                                         parallel.shape_bucket(n, chunk_size)):
    out = fn(variables, *parallel.shard_batch(tuple(chunk)), *replicated)
    outputs.append(np.asarray(parallel.gather_to_host(out))[mask > 0])
  return np.concatenate(outputs)


def _check_inputs(base_images, labels, noise_std: float):
  base_images = np.asarray(base_images, np.float32)
  labels = np.asarray(labels, np.int32)
  chex.assert_rank(base_images, 4)
  chex.assert_shape(labels, (base_images.shape[0],))
  if base_images.shape[0] == 0:
    raise ValueError('GUS needs at least one poison (base_images is empty).')
  if not (math.isfinite(noise_std) and noise_std > 0):
    raise ValueError(f'noise_std (ε) must be a finite number > 0, got '
                     f'{noise_std}')
  return base_images, labels


def input_gradient_scores(model: nn.Module, variables: Variables,
                          base_images: np.ndarray, labels: np.ndarray,
                          noise: np.ndarray, noise_std: float, *,
                          chunk_size: int = 256) -> np.ndarray:
  """I_z = ⟨∇ₓℓ(x_base,y)/‖∇ₓℓ(x_base,y)‖₂, ξ_z⟩/ε per poison (Alg. 4, 12-14).

  Args:
    model, variables: the model to test (evaluation mode).
    base_images: x_base, the clean images of the poisons, (P, H, W, C).
    labels: their labels y, (P,).
    noise: the stored ξ_z, (P, H, W, C).
    noise_std: ε, the std ξ was drawn with.
    chunk_size: rows per jitted call (memory bound).

  Returns:
    float32 (P,); NaN where the input gradient is exactly 0 (I undefined).
  """
  base_images, labels = _check_inputs(base_images, labels, noise_std)
  noise = np.asarray(noise, np.float32)
  chex.assert_equal_shape((noise, base_images))
  return _per_sample(_jitted_poison_scores(model), variables,
                     (base_images, labels, noise),
                     (np.float32(1.0 / noise_std),), chunk_size)


def fresh_noise_scores(model: nn.Module, variables: Variables,
                       base_images: np.ndarray, labels: np.ndarray,
                       noise_std: float, key_or_seed, draws: int = 1, *,
                       chunk_size: int = 256) -> np.ndarray:
  """The same statistic with fresh ξ̃ ~ N(0, ε²I) independent of the model:
  the "indep" population of Pawelczyk §4.3 / Fig. 6 (left), I ~ N(0, 1).

  Args:
    key_or_seed: a jax PRNG key or an int seed.
    draws: fresh ξ̃ per base image.

  Returns:
    float32 (draws, P).
  """
  base_images, labels = _check_inputs(base_images, labels, noise_std)
  if draws < 1:
    raise ValueError(f'draws must be >= 1, got {draws}')
  key = (jax.random.key(int(key_or_seed))
         if isinstance(key_or_seed, (int, np.integer)) else key_or_seed)
  if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(key)
  rows = np.arange(base_images.shape[0], dtype=np.int32)
  scores = _per_sample(_jitted_fresh_scores(model, int(draws)), variables,
                       (base_images, labels, rows),
                       (key, np.float32(noise_std)), chunk_size)
  return scores.T


def manipulation_scores(model: nn.Module, variables: Variables,
                        manipulation, **kwargs) -> np.ndarray:
  """`input_gradient_scores` for a `gaussian.GaussianPoisoning`."""
  return input_gradient_scores(
      model, variables, manipulation.base_images,
      manipulation.manipulated_clean_labels, manipulation.noise,
      manipulation.noise_std, **kwargs)


# ----------------------------------------------------------------------------
# GUS and the membership test
# ----------------------------------------------------------------------------


def _finite(scores, what: str) -> np.ndarray:
  scores = np.asarray(scores, np.float64).ravel()
  keep = np.isfinite(scores)
  if not keep.any():
    raise ValueError(f'{what}: no finite score (every input gradient is 0?)')
  if not keep.all():
    logging.warning('%s: dropped %d of %d scores with a zero input gradient.',
                    what, int((~keep).sum()), keep.size)
  return scores[keep]


def gus(scores) -> float:
  """GUS = mean_z I_z (Alg. 3 line 8; Alg. 4 line 24); null N(0, 1/P).

  Rows with an undefined I (zero input gradient, NaN) are left out; which
  rows those are depends on the model only, so the null stays N(0, 1/P').
  """
  return float(np.mean(_finite(scores, 'gus')))


def gus_z(scores) -> float:
  """GUS in null standard deviations: √P·GUS, ~ N(0, 1) under the null."""
  kept = _finite(scores, 'gus_z')
  return float(np.mean(kept) * math.sqrt(kept.size))


def membership_roc(poison_scores, fresh_scores
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """ROC of the test "z is a poison iff |I_z| > τ" (Pawelczyk §4.3).

  Positives: the stored ξ_z ("poison"); negatives: fresh ξ̃ ("indep").
  Returns sklearn's (fpr, tpr, thresholds on |I|), every threshold kept.
  """
  poison = np.abs(_finite(poison_scores, 'membership_roc (poison)'))
  fresh = np.abs(_finite(fresh_scores, 'membership_roc (fresh)'))
  truth = np.concatenate([np.ones(poison.size), np.zeros(fresh.size)])
  return sk_metrics.roc_curve(truth, np.concatenate([poison, fresh]),
                              drop_intermediate=False)


def tpr_at_fpr(poison_scores, fresh_scores, fpr: float = 0.01) -> float:
  """TPR@FPR: the largest TPR of a threshold on |I| whose FPR <= `fpr`.

  No interpolation between ROC points (no randomised test): the value is that
  of an attainable threshold, hence conservative. FPR comes in steps of
  1/N_fresh, so use N_fresh >> 1/fpr fresh draws (`draws` of
  `fresh_noise_scores`); with N_fresh < 1/fpr only FPR = 0 is attainable.
  """
  if not 0.0 <= fpr <= 1.0:
    raise ValueError(f'fpr must be in [0, 1], got {fpr}')
  fprs, tprs, _ = membership_roc(poison_scores, fresh_scores)
  return float(np.max(tprs[fprs <= fpr + 1e-12]))


# ----------------------------------------------------------------------------
# Analytic Gaussian trade-off curves (Fig. 7; Dong et al. 2022)
# ----------------------------------------------------------------------------


def dong_tradeoff(fpr, mu):
  """G_μ(FPR) = Φ(Φ⁻¹(1 − FPR) − μ), as Fig. 7 writes it (Dong et al.): the
  smallest type-II error (FNR = 1 − TPR) of a test of N(0,1) vs N(μ,1) at
  type-I error FPR. `analytic_tradeoff` is the TPR, 1 − G_|μ|."""
  return jax.scipy.special.ndtr(jax.scipy.special.ndtri(1.0 - fpr) - mu)


def analytic_tradeoff(fpr, mu):
  """TPR = 1 − G_|μ|(FPR) = Φ(Φ⁻¹(FPR) + |μ|): the one-sided test on I
  (threshold in the direction of the shift) of I ~ N(μ,1) vs N(0,1).

  μ = 0 gives the diagonal TPR = FPR; increasing in |μ|. This is the
  paper's dashed Fig. 7 curve read as TPR. The empirical test here thresholds
  |I| (two-sided), whose exact reference is `analytic_tradeoff_two_sided`,
  slightly below this one at the same μ (it spends half its FPR on the tail
  opposite to the shift). Jittable.
  """
  return jax.scipy.special.ndtr(jax.scipy.special.ndtri(fpr) + jnp.abs(mu))


def analytic_tradeoff_two_sided(fpr, mu):
  """TPR = P(|N(μ,1)| > t), t = Φ⁻¹(1 − FPR/2): the |I| test of N(μ,1) vs
  N(0,1) that `tpr_at_fpr` measures empirically. Jittable."""
  t = jax.scipy.special.ndtri(1.0 - 0.5 * jnp.asarray(fpr))
  return jax.scipy.special.ndtr(mu - t) + jax.scipy.special.ndtr(-mu - t)
