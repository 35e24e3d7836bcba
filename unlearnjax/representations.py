"""Per-layer input representations R Rᵀ and core gradient spaces (PGU §3.2.2).

For every `nn.Conv`, `nn.Dense` and `nn.DenseGeneral` of a linen model, the
input representation matrix R^l = [r_1, …, r_n*] ∈ R^{d×n*} holds one column
per input vector the layer's kernel multiplies:

* conv: every im2col patch of the layer input, taken with the layer's own
  kernel size, strides, padding and dilations, flattened in the kernel's
  (kh, kw, cin) order, so d = kh·kw·cin (the authors' code: `F.unfold`);
* dense: every input vector, d = din (a (N, T, din) token input gives N·T
  columns); DenseGeneral: the contracted axes flattened in `axis` order.

`layer_covariances` accumulates R Rᵀ = Σ_i R_i R_iᵀ (eq. 2) over a data set in
fixed-size chunks, model in evaluation mode (BatchNorm statistics fixed, as
the code's `model.eval()`). Layer inputs are captured generically with
`flax.linen.intercept_methods`, so no model needs changing; a module called
several times (shared weights) accumulates every call's inputs. Each device
reduces its own rows (`shard_map`, no collective); the per-device partial
sums come back stacked and are added on the host in float64 (the removal of
eq. 3 subtracts two large sums).

`remove` is eq. 3 (R_r R_rᵀ = R Rᵀ − R_f R_fᵀ), `core_gradient_space` the
CGS rule and `project` eq. 4. Layers are named by their module path joined
with '/', e.g. 'ConvBN_0/Conv_0'; their kernel is `params[...path]['kernel']`
and its leading axes (all but the output features) flatten to d.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import chex
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from unlearnjax import parallel
from unlearnjax.grads import padded_chunks

Covariances = dict  # {layer path: (d, d) float64 R Rᵀ}
Bases = dict        # {layer path: (d, k) orthonormal columns M}

CAPTURED_MODULES = (nn.Conv, nn.Dense, nn.DenseGeneral)
_HIGHEST = jax.lax.Precision.HIGHEST


def layer_name(module: nn.Module) -> str:
  return '/'.join(module.path)


def _as_tuple(value, rank: int) -> tuple[int, ...]:
  if value is None:
    return (1,) * rank
  if isinstance(value, int):
    return (value,) * rank
  return tuple(value)


def _conv_patches(module: nn.Conv, x: jax.Array) -> jax.Array:
  """(N, positions, kh·kw·cin) im2col patches, as `module` convolves them."""
  if module.feature_group_count != 1:
    raise ValueError(
        f'{layer_name(module)}: grouped convolutions (feature_group_count='
        f'{module.feature_group_count}) have no single (kh·kw·cin) input '
        'space; PGU supports feature_group_count=1 only.')
  kernel_size = _as_tuple(module.kernel_size, 1 if isinstance(
      module.kernel_size, int) else len(module.kernel_size))
  rank = len(kernel_size)
  if rank not in (1, 2, 3):
    raise ValueError(f'{layer_name(module)}: {rank}-D convolutions are not '
                     'supported (1-D, 2-D or 3-D only).')
  if x.ndim != rank + 2:
    raise ValueError(f'{layer_name(module)}: input of shape {x.shape}; PGU '
                     'needs exactly one leading batch axis (N, spatial…, C).')
  kernel_dilation = _as_tuple(module.kernel_dilation, rank)
  padding = nn.linear.canonicalize_padding(module.padding, rank)
  # The same explicit padding flax applies before a VALID convolution.
  if padding in ('CIRCULAR', 'REFLECT'):
    dilated = [(k - 1) * d + 1 for k, d in zip(kernel_size, kernel_dilation)]
    pads = [(0, 0)] + [((k - 1) // 2, k // 2) for k in dilated] + [(0, 0)]
    x = jnp.pad(x, pads, mode={'CIRCULAR': 'wrap', 'REFLECT': 'reflect'}[
        padding])
    padding = 'VALID'
  elif padding == 'CAUSAL':
    x = jnp.pad(x, [(0, 0), (kernel_dilation[0] * (kernel_size[0] - 1), 0),
                    (0, 0)])
    padding = 'VALID'
  spatial = 'DHW'[-rank:]
  lhs = f'N{spatial}C'
  patches = jax.lax.conv_general_dilated_patches(
      x, kernel_size, _as_tuple(module.strides, rank), padding,
      lhs_dilation=_as_tuple(module.input_dilation, rank),
      rhs_dilation=kernel_dilation,
      dimension_numbers=(lhs, f'OI{spatial}', lhs), precision=_HIGHEST)
  # lax orders a patch channel-major (cin, kh, kw); the kernel flattens as
  # (kh, kw, cin): reorder so R's rows match the kernel's rows.
  cin, window = x.shape[-1], math.prod(kernel_size)
  n = x.shape[0]
  patches = patches.reshape(n, -1, cin, window)
  return jnp.swapaxes(patches, -1, -2).reshape(n, -1, window * cin)


def _dense_inputs(module: nn.Module, x: jax.Array) -> jax.Array:
  """(N, positions, din) input vectors of a Dense / DenseGeneral."""
  if isinstance(module, nn.Dense):
    return x.reshape(x.shape[0], -1, x.shape[-1])
  if module.batch_dims:
    raise ValueError(f'{layer_name(module)}: DenseGeneral with batch_dims '
                     'has one kernel per batch index; PGU does not support it.')
  axes = module.axis if isinstance(module.axis, Sequence) else (module.axis,)
  axes = tuple(a % x.ndim for a in axes)
  if 0 in axes:
    raise ValueError(f'{layer_name(module)}: contracts the batch axis.')
  x = jnp.moveaxis(x, axes, tuple(range(x.ndim - len(axes), x.ndim)))
  d = math.prod(x.shape[x.ndim - len(axes):])
  return x.reshape(x.shape[0], -1, d)


def representations(module: nn.Module, x: jax.Array) -> jax.Array:
  """R for one call of a captured layer: (N, positions, d)."""
  if isinstance(module, nn.Conv):
    return _conv_patches(module, x)
  return _dense_inputs(module, x)


def capture_representations(model: nn.Module, variables, images: jax.Array,
                            *, reduce_fn: Callable[[jax.Array], jax.Array]
                            = lambda r: r) -> dict:
  """Evaluation-mode forward of `images`; {layer: [reduce_fn(R) per call]}.

  The dict is in call order (the last entry is the last layer called, the
  classifier head for a feed-forward model).
  """
  captured: dict[str, list] = {}

  def interceptor(next_fn, args, kwargs, context):
    module = context.module
    if (context.method_name == '__call__'
        and isinstance(module, CAPTURED_MODULES) and args):
      rows = representations(module, jnp.asarray(args[0]))
      if rows.shape[0] != images.shape[0]:
        raise ValueError(
            f'{layer_name(module)}: input has {rows.shape[0]} rows for '
            f'{images.shape[0]} images; PGU needs the sample axis first.')
      captured.setdefault(layer_name(module), []).append(reduce_fn(rows))
    return next_fn(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    model.apply(variables, images, train=False)
  return captured


def layer_dims(model: nn.Module, variables, image_shape: Sequence[int]
               ) -> dict[str, int]:
  """{layer: d} in call order (shapes only; nothing is computed)."""
  dims = {}

  def trace(images):
    out = capture_representations(model, variables, images)
    return {k: v[0].shape[-1] for k, v in out.items()}

  def record(images):
    dims.update(trace(images))
    return jnp.zeros(())

  jax.eval_shape(record, jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
  return dims


@functools.lru_cache(maxsize=32)
def _jitted_gram_sum(model: nn.Module) -> Callable:
  """Per device: {layer: (1, d, d)} Σ over its real rows of R Rᵀ.

  No collective (the pattern of `grads._jitted_masked_sum`): the per-device
  partials come back stacked along the device axis and the host adds them.
  """

  def local_sum(variables, images, mask):
    keep = mask > 0

    def gram(rows):
      chex.assert_rank(rows, 3)
      rows = jnp.where(keep[:, None, None], rows.astype(jnp.float32), 0.0)
      flat = rows.reshape(-1, rows.shape[-1])
      return jnp.matmul(flat.T, flat, precision=_HIGHEST)

    captured = capture_representations(model, variables, images,
                                       reduce_fn=gram)
    return {name: sum(grams)[None] for name, grams in captured.items()}

  data = P(parallel.DATA_AXIS)
  return jax.jit(jax.shard_map(local_sum, mesh=parallel.data_mesh(),
                               in_specs=(P(), data, data), out_specs=data,
                               check_vma=False))


def layer_covariances(model: nn.Module, variables, images: np.ndarray,
                      chunk_size: int = 128) -> Covariances:
  """{layer: R Rᵀ} over `images` (PGU eq. 2), float64 numpy, call order.

  Args:
    model: a linen classifier `(x, train) -> logits`.
    variables: {'params', 'batch_stats'}; the model runs in evaluation mode.
    images: (N, H, W, C) host array (N may be 0: all-zero matrices).
    chunk_size: images per jitted call (patches of a conv layer take
      chunk_size·H·W·d floats).
  """
  variables = {'params': variables['params'],
               'batch_stats': variables.get('batch_stats', {})}
  if images.shape[0] == 0:
    dims = layer_dims(model, variables, images.shape[1:])
    return {name: np.zeros((d, d)) for name, d in dims.items()}
  order = layer_dims(model, variables, images.shape[1:])
  fn = _jitted_gram_sum(model)
  replicated = parallel.replicate(variables)
  total = None
  n = images.shape[0]
  for (chunk,), mask in padded_chunks((images,),
                                      parallel.shape_bucket(n, chunk_size)):
    partial = parallel.gather_to_host(
        fn(replicated, *parallel.shard_batch((chunk, mask))))
    partial = {k: np.sum(np.asarray(v, np.float64), axis=0)
               for k, v in partial.items()}
    total = partial if total is None else {k: total[k] + v
                                           for k, v in partial.items()}
  return {name: total[name] for name in order}  # call order (jit sorts keys)


def remove(cache: Covariances, removed: Covariances) -> Covariances:
  """R_r R_rᵀ = R Rᵀ − R_f R_fᵀ for every layer (PGU eq. 3)."""
  if set(cache) != set(removed):
    raise ValueError(f'remove: the caches cover different layers ({sorted(cache)}'
                     f' vs {sorted(removed)}); compute both with the same model.')
  out = {}
  for name, full in cache.items():
    if np.shape(full) != np.shape(removed[name]):
      raise ValueError(f'remove: layer {name} has shapes {np.shape(full)} and '
                       f'{np.shape(removed[name])}')
    out[name] = np.asarray(full, np.float64) - np.asarray(removed[name],
                                                          np.float64)
  return out


def singular_values(rrt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(σ descending, U): R Rᵀ = U diag(σ²) Uᵀ (eq. 2). Eigenvalues that the
  removal of eq. 3 left slightly negative (rounding) count as 0."""
  rrt = np.asarray(rrt, np.float64)
  if rrt.ndim != 2 or rrt.shape[0] != rrt.shape[1]:
    raise ValueError(f'R Rᵀ must be a square matrix, got shape {rrt.shape}')
  eigenvalues, vectors = np.linalg.eigh(0.5 * (rrt + rrt.T))
  order = np.argsort(eigenvalues)[::-1]
  return np.sqrt(np.clip(eigenvalues[order], 0.0, None)), vectors[:, order]


def core_dimension(sigma: np.ndarray, energy_threshold: float) -> int:
  """The smallest k with Σ_{i≤k} σ_i ≥ γ·Σ_i σ_i (PGU §3.2.2; singular values,
  not their squares, as the authors' code sums them)."""
  if not 0.0 <= energy_threshold <= 1.0:
    raise ValueError(f'energy_threshold (γ) must be in [0, 1], got '
                     f'{energy_threshold}')
  cumulative = np.cumsum(sigma)
  total = cumulative[-1] if cumulative.size else 0.0
  if total <= 0.0 or energy_threshold == 0.0:
    return 0
  return int(np.searchsorted(cumulative, energy_threshold * total,
                             side='left')) + 1


def core_gradient_space(rrt: np.ndarray, energy_threshold: float) -> np.ndarray:
  """M = the first k eigenvectors of R Rᵀ, k by `core_dimension`: (d, k)."""
  sigma, vectors = singular_values(rrt)
  return vectors[:, :core_dimension(sigma, energy_threshold)]


def core_gradient_spaces(cache: Covariances, energy_threshold: float) -> Bases:
  return {name: core_gradient_space(rrt, energy_threshold)
          for name, rrt in cache.items()}


def kernel_key(layer: str) -> str:
  return f'{layer}/kernel'


def project_kernel(kernel_grad: jax.Array, basis: jax.Array) -> jax.Array:
  """g − M Mᵀ g with g the kernel reshaped to (d, out) (flax's (in, out)
  orientation of the paper's g M Mᵀ, eq. 4)."""
  d = basis.shape[0]
  prefixes = np.cumprod((1, *kernel_grad.shape))
  if d not in prefixes[:-1] or basis.ndim != 2:
    raise ValueError(f'kernel of shape {kernel_grad.shape} does not flatten '
                     f'to ({d}, out)')
  g = kernel_grad.reshape(d, -1)
  basis = basis.astype(g.dtype)
  g = g - jnp.matmul(basis, jnp.matmul(basis.T, g, precision=_HIGHEST),
                     precision=_HIGHEST)
  return g.reshape(kernel_grad.shape)


def project(grads, bases: Bases):
  """PGU eq. 4 on every captured layer's kernel; every other leaf (biases,
  BatchNorm and LayerNorm scales, embeddings) becomes 0, as PGU §4.1 updates
  only the convolutional and linear weights. Pure; works under jit."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(grads), sep='/')
  missing = [name for name in bases if kernel_key(name) not in flat]
  if missing:
    raise ValueError(f'project: no kernel for layers {missing}; the bases '
                     'come from another model.')
  out = {}
  for key, g in flat.items():
    layer = key[:-len('/kernel')] if key.endswith('/kernel') else None
    if layer in bases:
      out[key] = project_kernel(g, jnp.asarray(bases[layer]))
    else:
      out[key] = jnp.zeros_like(g)
  return flax.traverse_util.unflatten_dict(out, sep='/')
