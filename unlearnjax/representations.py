"""Per-layer input representations R Rᵀ and core gradient spaces (PGU §3.2.2).

For every `nn.Conv`, `nn.Dense` and `nn.DenseGeneral` of a linen model, the
input representation matrix R^l = [r_1, …, r_n*] ∈ R^{d×n*} holds one column
per input vector the layer's kernel multiplies:

* conv: im2col patches of the layer input, with the layer's own kernel size,
  padding, kernel and input dilations, flattened in the kernel's
  (kh, kw, cin) order, so d = kh·kw·cin. Where the patches are taken
  (`patch_stride`, `PATCH_STRIDES`):
  - 'unit' (default, the authors' code): every stride-1 position, whatever
    the layer's stride. `utils/unlearn_utils.py:compute_svd` unfolds every
    conv with `F.unfold(x, kernel_size, padding=layer.padding, dilation=1,
    stride=1)`, so a stride-2 conv on an 8×8 map gets 64 patches per image,
    not the 16 it convolves. The paper (§3.2.2) only says "input
    representation"; we follow the code. A string padding is evaluated at
    stride 1 (flax 'SAME' with k = 3 pads (1, 1), as torch padding=1).
  - 'layer': only the positions the layer visits (its own strides), i.e.
    exactly the rows whose product with the kernel is the layer's output.
  The authors' models have no dilated convolutions; we keep the layer's
  kernel dilation (an undilated patch is no row a dilated kernel multiplies)
  where their `dilation=1` would not.
  torch orders a patch (cin, kh, kw); R Rᵀ here is in the flax kernel's
  (kh, kw, cin) order, a permutation of the authors' matrix.
* dense: every input vector, d = din (a (N, T, din) token input gives N·T
  columns); DenseGeneral: the contracted axes flattened in `axis` order.

`layer_covariances` accumulates R Rᵀ = Σ_i R_i R_iᵀ (eq. 2) over a data set in
fixed-size chunks, model in evaluation mode (BatchNorm statistics fixed, as
the code's `model.eval()`). Layer inputs are captured generically with
`flax.linen.intercept_methods`, so no model needs changing; a module called
several times (shared weights) accumulates every call's inputs. Each device
reduces its own rows (`shard_map`, no collective); the per-device partial
sums come back stacked and are added on the host in float64 (the removal of
eq. 3 subtracts two large sums; the authors accumulate in float64 too).

`remove` is eq. 3 (R_r R_rᵀ = R Rᵀ − R_f R_fᵀ), `core_dimension` /
`core_gradient_space` the CGS rule (with the authors' three variants of the
cut, `CORE_DIMENSION_RULES`) and `project` eq. 4. Layers are named by their
module path joined with '/', e.g. 'ConvBN_0/Conv_0'; their kernel is
`params[...path]['kernel']` and its leading axes (all but the output
features) flatten to d.
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
# Where conv patches are taken (module docstring): the authors' stride 1, or
# the layer's own strides.
PATCH_STRIDES = ('unit', 'layer')
DEFAULT_PATCH_STRIDE = 'unit'
_HIGHEST = jax.lax.Precision.HIGHEST


def layer_name(module: nn.Module) -> str:
  return '/'.join(module.path)


def _as_tuple(value, rank: int) -> tuple[int, ...]:
  if value is None:
    return (1,) * rank
  if isinstance(value, int):
    return (value,) * rank
  return tuple(value)


def check_patch_stride(patch_stride: str) -> None:
  if patch_stride not in PATCH_STRIDES:
    raise ValueError(f'patch_stride must be one of {PATCH_STRIDES} (stride-1 '
                     "patches as the authors' code, or the layer's own "
                     f'strides), got {patch_stride!r}')


def _conv_patches(module: nn.Conv, x: jax.Array,
                  patch_stride: str = DEFAULT_PATCH_STRIDE) -> jax.Array:
  """(N, positions, kh·kw·cin) im2col patches of `module`'s input: at every
  stride-1 position ('unit', the authors' `F.unfold(..., stride=1)`) or at
  the positions `module` convolves ('layer')."""
  check_patch_stride(patch_stride)
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
  strides = ((1,) * rank if patch_stride == 'unit'
             else _as_tuple(module.strides, rank))
  patches = jax.lax.conv_general_dilated_patches(
      x, kernel_size, strides, padding,
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


def representations(module: nn.Module, x: jax.Array,
                    patch_stride: str = DEFAULT_PATCH_STRIDE) -> jax.Array:
  """R for one call of a captured layer: (N, positions, d). `patch_stride`
  (conv only): 'unit' (the authors' stride-1 unfolding) or 'layer'."""
  if isinstance(module, nn.Conv):
    return _conv_patches(module, x, patch_stride)
  return _dense_inputs(module, x)


def capture_representations(model: nn.Module, variables, images: jax.Array,
                            *, reduce_fn: Callable[[jax.Array], jax.Array]
                            = lambda r: r,
                            patch_stride: str = DEFAULT_PATCH_STRIDE) -> dict:
  """Evaluation-mode forward of `images`; {layer: [reduce_fn(R) per call]}.

  The dict is in call order (the last entry is the last layer called, the
  classifier head for a feed-forward model). `patch_stride`: see the module
  docstring.
  """
  captured: dict[str, list] = {}

  def interceptor(next_fn, args, kwargs, context):
    module = context.module
    if (context.method_name == '__call__'
        and isinstance(module, CAPTURED_MODULES) and args):
      rows = representations(module, jnp.asarray(args[0]), patch_stride)
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
def _jitted_gram_sum(model: nn.Module, patch_stride: str) -> Callable:
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
                                       reduce_fn=gram,
                                       patch_stride=patch_stride)
    return {name: sum(grams)[None] for name, grams in captured.items()}

  data = P(parallel.DATA_AXIS)
  return jax.jit(jax.shard_map(local_sum, mesh=parallel.data_mesh(),
                               in_specs=(P(), data, data), out_specs=data,
                               check_vma=False))


def layer_covariances(model: nn.Module, variables, images: np.ndarray,
                      chunk_size: int = 128,
                      patch_stride: str = DEFAULT_PATCH_STRIDE) -> Covariances:
  """{layer: R Rᵀ} over `images` (PGU eq. 2), float64 numpy, call order.

  Args:
    model: a linen classifier `(x, train) -> logits`.
    variables: {'params', 'batch_stats'}; the model runs in evaluation mode.
    images: (N, H, W, C) host array (N may be 0: all-zero matrices).
    chunk_size: images per jitted call (patches of a conv layer take
      chunk_size·H·W·d floats).
    patch_stride: 'unit' (every stride-1 conv patch, the authors'
      `compute_svd`) or 'layer' (the layer's own strides); module docstring.
  """
  check_patch_stride(patch_stride)
  variables = {'params': variables['params'],
               'batch_stats': variables.get('batch_stats', {})}
  if images.shape[0] == 0:
    dims = layer_dims(model, variables, images.shape[1:])
    return {name: np.zeros((d, d)) for name, d in dims.items()}
  order = layer_dims(model, variables, images.shape[1:])
  fn = _jitted_gram_sum(model, patch_stride)
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


# How many leading singular vectors the CGS keeps (PGU §3.2.2). With
# C_k = Σ_{i≤k} σ_i / Σ_i σ_i, the cumulative share of the singular values:
CORE_DIMENSION_RULES = (
    'count_at_most',           # k = #{k: C_k ≤ γ}; `unlearn.py`:179
    'count_below',             # k = #{k: C_k < γ}; `depoisoning.py`:147
    'count_at_most_plus_one',  # k = #{k: C_k ≤ γ} + 1; `unlearn_class.py`:186
    'first_reaching',          # the smallest k with C_k ≥ γ; §3.2.2 as printed
)
DEFAULT_CORE_DIMENSION_RULE = 'count_at_most'


def check_core_dimension_rule(rule: str) -> None:
  if rule not in CORE_DIMENSION_RULES:
    raise ValueError(f'core_dimension_rule must be one of '
                     f'{CORE_DIMENSION_RULES}, got {rule!r}')


def core_dimension(sigma: np.ndarray, energy_threshold: float,
                   rule: str = DEFAULT_CORE_DIMENSION_RULE) -> int:
  """k, the CGS dimension, from the singular values σ (descending) of R.

  The paper (§3.2.2) keeps "the first k vectors … where k satisfies
  Σ_{i≤k} σ_i ≥ γ Σ_i σ_i" ('first_reaching'); each of the authors' scripts
  cuts differently (`CORE_DIMENSION_RULES`): `unlearn.py` (forgetting)
  counts the prefixes whose share C_k ≤ γ, one vector fewer than the paper
  unless C_k = γ exactly; `depoisoning.py` counts C_k < γ; `unlearn_class.py`
  (class removal) adds one to the `unlearn.py` count (= the paper's k
  except at C_k = γ). All sum singular values, not their squares (unlike
  GPM's energy criterion). The shares are compared as the code does, C_k =
  cumsum(σ)/Σσ against γ.

  Edge cases: an all-zero σ keeps k = 0 under every rule (the code's 0/0
  gives NaN shares, so its `+1` rule would keep one arbitrary vector); with
  γ = 1 the `count_at_most` rules keep every vector (`unlearn.py` and
  `unlearn_class.py` skip such a layer, which then gets no update — the
  same as projecting out all of it — and a cumulative sum rounded past 1
  must not drop the last vector); k never exceeds d.
  """
  if not 0.0 <= energy_threshold <= 1.0:
    raise ValueError(f'energy_threshold (γ) must be in [0, 1], got '
                     f'{energy_threshold}')
  check_core_dimension_rule(rule)
  sigma = np.asarray(sigma, np.float64)
  d = sigma.size
  total = float(np.sum(sigma)) if d else 0.0
  if total <= 0.0:
    return 0
  share = np.cumsum(sigma) / total
  if rule == 'first_reaching':
    if energy_threshold == 0.0:
      return 0
    return min(d, int(np.searchsorted(share, energy_threshold, side='left'))
               + 1)
  if rule == 'count_below':
    return int(np.sum(share < energy_threshold))
  if energy_threshold == 1.0:
    return d
  k = int(np.sum(share <= energy_threshold))
  return min(d, k + 1) if rule == 'count_at_most_plus_one' else k


def core_gradient_space(rrt: np.ndarray, energy_threshold: float,
                        rule: str = DEFAULT_CORE_DIMENSION_RULE) -> np.ndarray:
  """M = the first k eigenvectors of R Rᵀ, k by `core_dimension`: (d, k)."""
  sigma, vectors = singular_values(rrt)
  return vectors[:, :core_dimension(sigma, energy_threshold, rule)]


def core_gradient_spaces(cache: Covariances, energy_threshold: float,
                         rule: str = DEFAULT_CORE_DIMENSION_RULE) -> Bases:
  return {name: core_gradient_space(rrt, energy_threshold, rule)
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
