"""Fisher forgetting (Golatkar et al. 2020 §4-5, "Fisher Forgetting"; RELOAD
§4.2 baseline; SPEC.md, Methods "Fisher forgetting").

θ ← θ + √v ⊙ ξ, ξ ~ N(0, I), with v ∝ the inverse of the diagonal Fisher of
the retain set at M_o. No training; BatchNorm running statistics untouched
(the reference code perturbs `model.parameters()` only).

The variance follows Golatkar's code (AdityaGolatkar/SelectiveForgetting,
`hessian` and `get_mean_var`, copied verbatim as the `fisher` baseline of
Foster's SSD repo, if-loops/selective-synaptic-dampening, which the
corrective and RELOAD baselines reuse), leaf by leaf:

1. F = mean over retain samples of Σ_c p(c|x) (∂CE(x, c)/∂θ)², the *true*
   Fisher (model in evaluation mode, batch 1 in the code: exactly the
   per-sample mean here). `fisher_kind='empirical'` uses the given labels
   instead (`importance.parameter_importance('fisher')`, SSD's importance).
2. v = min(1 / (F + 1e-8), 1e3) (`variance_cap`); the output layer's leaves
   (torch: `p.size(0) == num_classes`) are capped at 1e2
   (`output_variance_cap`).
3. v ← α · v, α = `noise_scale` (the code calls it with α = 1e-6).
4. Leaves of rank > 1: v averaged over the input-channel axis and broadcast
   back (torch `mean(dim=1)` of an (out, in, …) weight; Flax's Dense/Conv
   kernels are (…, in, out), so axis −2).
5. v ← 10 · v for 1-D leaves (biases, BatchNorm scale/shift; the code's
   "BatchNorm" branch, `one_dim_scale`) and for the output layer's kernel
   (Golatkar's "Last layer" branch, `output_layer_scale`; Foster's copy drops
   that branch: `output_layer_scale=1`). The class-forgetting lines (zeroing
   one output row) do not apply to sample forgetting and are left out.

The output layer is the last top-level `params` entry in definition order
(`budgeted.last_modules`), or the module named by `output_layer`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from unlearnjax import grads as grads_lib
from unlearnjax import importance
from unlearnjax.unlearn import budgeted
from unlearnjax.unlearn.base import Method, UnlearnTask

FISHER_KINDS = ('true', 'empirical')


@dataclasses.dataclass(frozen=True)
class FisherForgettingHparams:
  noise_scale: float = 1e-6           # Golatkar's α (code: alpha = 1e-6)
  variance_cap: float = 1e3           # clamp of 1/F
  output_variance_cap: float = 1e2    # clamp of 1/F on the output layer
  one_dim_scale: float = 10.0         # × v of 1-D leaves (biases, BatchNorm)
  output_layer_scale: float = 10.0    # × v of the output kernel (Golatkar)
  fisher_kind: str = 'true'           # 'true' (Golatkar) or 'empirical'
  output_layer: str | None = None     # None: the last top-level module
  chunk_size: int = 64                # rows per per-sample Fisher call


def noise_variance(fisher, noise_scale: float, output_layer: str, *,
                   variance_cap: float = 1e3,
                   output_variance_cap: float = 1e2,
                   one_dim_scale: float = 10.0,
                   output_layer_scale: float = 10.0):
  """v for every parameter from its diagonal Fisher (steps 2-5 above).

  Args:
    fisher: {module name: {leaf name: F}} (a Flax `params`-shaped tree).
    output_layer: the top-level module name of the classifier's last layer.
  """
  if not noise_scale >= 0.0:
    raise ValueError(f'noise_scale must be >= 0, got {noise_scale}')
  if output_layer not in fisher:
    raise ValueError(f'output_layer {output_layer!r} is not a top-level '
                     f'module; valid: {", ".join(fisher)}')
  if min(variance_cap, output_variance_cap) <= 0:
    raise ValueError('variance caps must be positive')

  def leaf(f, in_output):
    f = np.asarray(f, np.float64)
    if not np.all(np.isfinite(f)) or np.any(f < 0):
      raise ValueError('the Fisher must be finite and non-negative')
    v = np.minimum(1.0 / (f + 1e-8),
                   output_variance_cap if in_output else variance_cap)
    v = noise_scale * v
    if v.ndim > 1:
      v = np.broadcast_to(v.mean(axis=-2, keepdims=True), v.shape)
    if v.ndim <= 1:
      v = one_dim_scale * v
    elif in_output:
      v = output_layer_scale * v
    return np.array(v, np.float32)

  return {name: jax.tree.map(functools.partial(leaf, in_output=name ==
                                               output_layer), sub)
          for name, sub in fisher.items()}


@jax.jit
def add_noise(params, variance, key: jax.Array):
  """θ + √v ⊙ ξ, ξ ~ N(0, I): one float32 normal draw for all parameters,
  cut in `jax.tree.leaves` order (one random kernel: a draw per leaf took
  seconds to compile on XLA:CPU). Deterministic per key."""
  chex.assert_trees_all_equal_shapes(params, variance)
  leaves, treedef = jax.tree.flatten(params)
  variances = treedef.flatten_up_to(variance)
  sizes = [int(np.prod(p.shape)) for p in leaves]
  noise = jax.random.normal(key, (sum(sizes),), jnp.float32)
  offsets = np.cumsum([0] + sizes)
  return jax.tree.unflatten(treedef, [
      p + (jnp.sqrt(v) * noise[a:b].reshape(p.shape)).astype(p.dtype)
      for p, v, a, b in zip(leaves, variances, offsets[:-1], offsets[1:])])


@functools.lru_cache(maxsize=16)
def _true_fisher_fn(model: nn.Module) -> Callable:
  """(variables, x, y) -> per-sample Σ_c p_c (∂CE(x, c)/∂θ)² (labels unused).

  One forward and C vector-Jacobian products per sample: ∂CE(x, c)/∂z =
  p − e_c, so g_c = vjp(p − e_c)."""

  def fn(variables, x, y):
    del y
    params, batch_stats = variables['params'], variables['batch_stats']

    def per_sample(image):
      def logits_fn(p):
        return model.apply({'params': p, 'batch_stats': batch_stats},
                           image[None], train=False)[0]
      logits, vjp = jax.vjp(logits_fn, params)
      probs = jax.nn.softmax(logits)
      cotangents = probs[None, :] - jnp.eye(logits.shape[-1],
                                            dtype=probs.dtype)
      (g,) = jax.vmap(vjp)(cotangents)
      return jax.tree.map(
          lambda t: jnp.tensordot(probs, jnp.square(t), axes=1), g)

    return jax.vmap(per_sample)(x)

  return fn


def retain_fisher(task: UnlearnTask, fisher_kind: str = 'true',
                  chunk_size: int = 64):
  """The retain set's diagonal Fisher at M_o, memoised in the task's cache."""
  if fisher_kind not in FISHER_KINDS:
    raise ValueError(f'Unknown fisher_kind {fisher_kind!r}; valid: '
                     f'{FISHER_KINDS}')
  split = task.retain_split
  if len(split) == 0:
    raise ValueError('Fisher forgetting needs a non-empty retain set')

  def compute():
    if fisher_kind == 'empirical':
      return importance.parameter_importance(
          task.model, task.original, split.images, split.labels,
          importance='fisher', estimator='exact', batch_size=chunk_size)
    return grads_lib.mean_over_samples(
        _true_fisher_fn(task.model), task.original, split.images,
        split.labels, chunk_size)

  return task.cached(f'fisher_forgetting/{fisher_kind}', task.retain, compute)


def output_layer_name(task: UnlearnTask) -> str:
  """The last top-level module of a fresh initialisation (definition order),
  memoised in the task's cache."""
  def compute():
    fresh = budgeted.fresh_variables(task.model, jax.random.key(0),
                                     task.train.image_shape)
    return budgeted.last_modules(fresh, 1)[0]
  return task.cached('fisher_forgetting/output_layer', None, compute)


def unlearn(task: UnlearnTask, hparams: FisherForgettingHparams,
            key: jax.Array):
  output_layer = hparams.output_layer or output_layer_name(task)
  fisher = retain_fisher(task, hparams.fisher_kind, hparams.chunk_size)
  variance = noise_variance(
      fisher, hparams.noise_scale, output_layer,
      variance_cap=hparams.variance_cap,
      output_variance_cap=hparams.output_variance_cap,
      one_dim_scale=hparams.one_dim_scale,
      output_layer_scale=hparams.output_layer_scale)
  params = add_noise(task.original['params'], variance, key)
  return {'params': jax.device_get(params),
          'batch_stats': task.original['batch_stats']}


# Golatkar's and RELOAD's papers give no noise scale that transfers across
# models; on the digits CNN 1e-6 barely moves the model and 1e-4 destroys it.
# Studies that search (Goel's score in the corrective study) use this grid.
NOISE_SCALES = (1e-8, 1e-7, 1e-6, 1e-5, 1e-4)


def grid(task: UnlearnTask) -> list[FisherForgettingHparams]:
  del task
  return [FisherForgettingHparams(noise_scale=s) for s in NOISE_SCALES]


METHOD = Method('fisher_forgetting', unlearn, FisherForgettingHparams, grid)
