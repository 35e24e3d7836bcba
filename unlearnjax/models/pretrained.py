"""Pretrained ViT weights from a local ``.npz`` in the published AugReg layout.

The AugReg checkpoints of Steiner et al., "How to train your ViT? Data,
Augmentation, and Regularization in Vision Transformers" (TMLR 2022),
``gs://vit_models/augreg/*.npz`` (e.g. ViT-B/16 ImageNet-21k,
``B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.npz``), are flat
``np.savez`` archives of the google-research/vision_transformer (``vit_jax``)
Flax parameter tree, keys joined with '/':

  embedding/{kernel,bias}                 (p, p, 3, D), (D,)
  cls                                     (1, 1, D)
  Transformer/posembed_input/pos_embedding          (1, 1 + N, D)
  Transformer/encoderblock_{i}/LayerNorm_0/{scale,bias}
  Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/
      {query,key,value}/kernel (D, H, D/H), .../bias (H, D/H),
      out/kernel (H, D/H, D), out/bias (D,)
  Transformer/encoderblock_{i}/LayerNorm_2/{scale,bias}
  Transformer/encoderblock_{i}/MlpBlock_3/Dense_{0,1}/{kernel,bias}
  Transformer/encoder_norm/{scale,bias}
  head/{kernel,bias}                      (D, classes of pretraining)
  pre_logits/{kernel,bias}                (only in some non-AugReg files)

``load_vit_npz`` maps these onto ``unlearnjax.models.vit.ViT``'s tree
(``embedding``, ``cls``, ``pos_embedding``, ``encoderblock_{i}/
{LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0}``,
``encoder_norm``, ``head``), the renaming big_vision's ``vit.py``
(``_fix_old_checkpoints``) does, and follows ``vit_jax/checkpoint.py``
``load_pretrained`` for fine-tuning: the head is fresh for ``num_classes``,
drawn with the model's own head initialisers (``vit.head_kernel_init``:
zeros by default, as the model's init; with ``head_zeroinit=False`` a
LeCun-normal draw from ``key``, the model's distribution but not the same
numbers as ``model.init(key)``), ``pre_logits`` is
dropped (the drop-head variant; this ViT has no representation layer), and
the position embedding's patch grid is resized by linear interpolation
(``scipy.ndimage.zoom(order=1)``, as ``load_pretrained`` and big_vision's
``resample_posemb``) when the image size differs; the class token's
embedding is kept. A non-square new grid (H != W) is allowed. Every other
array must be there with the model's shape, and any other key is an error,
so no pretrained weight is silently left out.
"""

from __future__ import annotations

import os
import re
from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage

from unlearnjax.errors import ConfigError
from unlearnjax.models import vit as vit_lib

POSEMB_KEY = 'Transformer/posembed_input/pos_embedding'
# AugReg sub-path -> this ViT's sub-path, inside each encoder block.
_BLOCK_RENAMES = {
    'LayerNorm_0': 'LayerNorm_0',
    'MultiHeadDotProductAttention_1': 'MultiHeadDotProductAttention_0',
    'LayerNorm_2': 'LayerNorm_1',
    'MlpBlock_3': 'MlpBlock_0',
}
# Keys of the pretraining head, replaced by a fresh one.
_DROPPED = ('head/', 'pre_logits/')


def augreg_key(path: str) -> str:
  """The AugReg npz key of this ViT's parameter ``path`` ('a/b/kernel')."""
  if path == 'pos_embedding':
    return POSEMB_KEY
  if path.startswith('encoder_norm/'):
    return 'Transformer/' + path
  match = re.fullmatch(r'(encoderblock_\d+)/([^/]+)/(.+)', path)
  if match:
    block, module, rest = match.groups()
    inverse = {v: k for k, v in _BLOCK_RENAMES.items()}
    if module not in inverse:
      raise ValueError(f'no AugReg name for ViT parameter {path!r}')
    return f'Transformer/{block}/{inverse[module]}/{rest}'
  return path


def resample_posemb(posemb: np.ndarray, grid: Sequence[int],
                    num_prefix_tokens: int = 1) -> np.ndarray:
  """(1, prefix + g*g, D) -> (1, prefix + grid[0]*grid[1], D): the square
  patch grid zoomed linearly (``scipy.ndimage.zoom(order=1)``, as
  ``vit_jax`` ``load_pretrained``), the prefix (class) tokens kept."""
  posemb = np.asarray(posemb)
  prefix, patches = posemb[:, :num_prefix_tokens], posemb[0, num_prefix_tokens:]
  side = int(round(np.sqrt(patches.shape[0])))
  if side * side != patches.shape[0]:
    raise ConfigError(
        f'{POSEMB_KEY}: {patches.shape[0]} patch embeddings are not a square '
        'grid; only square pretraining grids can be resized.')
  patches = patches.reshape(side, side, -1)
  zoom = (grid[0] / side, grid[1] / side, 1)
  patches = scipy.ndimage.zoom(patches, zoom, order=1)
  patches = patches.reshape(1, grid[0] * grid[1], -1)
  return np.concatenate([prefix, patches.astype(posemb.dtype)], axis=1)


def load_vit_npz(model: vit_lib.ViT, path: str, image_shape: Sequence[int],
                 key: jax.Array) -> dict[str, Any]:
  """``{'params', 'batch_stats'}`` of ``model`` from the AugReg npz ``path``.

  Every pretrained array but the head's (and ``pre_logits``) is kept; the
  head is fresh for ``model.num_classes`` (``key`` draws it unless it is
  zero-initialised); the position embedding is resized to
  ``image_shape``'s patch grid if it differs. Host (numpy) arrays, in the
  model's dtypes.

  Raises:
    ConfigError: the file is missing or unreadable, a key is missing or has
      the wrong shape (both shapes named), or the file has a key this model
      has no place for (e.g. a deeper checkpoint, or a class token with
      ``pool='gap'``).
  """
  if not isinstance(model, vit_lib.ViT):
    raise ConfigError(f'load_vit_npz needs a ViT, got {type(model).__name__}')
  if not os.path.isfile(path):
    raise ConfigError(f'Pretrained weights {path!r} do not exist; download '
                      'the AugReg .npz (docs/models.md) or fix '
                      'config.pretrain.npz_path.')
  try:
    with np.load(path, allow_pickle=False) as archive:
      stored = {k: archive[k] for k in archive.files}
  except (OSError, ValueError) as e:
    raise ConfigError(f'Pretrained weights {path!r} are not a readable .npz '
                      f'({e}).') from e
  # Shapes only (no compute), then a fresh head with the model's own
  # initialisers: running the whole init of a ViT-B/16 would be wasted.
  shapes = jax.eval_shape(lambda: model.init(
      key, jnp.zeros((1, *image_shape), jnp.float32), train=False))
  flat = flax.traverse_util.flatten_dict(
      flax.core.unfreeze(shapes['params']), sep='/')
  out = {
      'head/kernel': np.asarray(vit_lib.head_kernel_init(model.head_zeroinit)(
          key, flat['head/kernel'].shape, flat['head/kernel'].dtype)),
      'head/bias': np.zeros(flat['head/bias'].shape, flat['head/bias'].dtype),
  }
  sources = {name: augreg_key(name) for name in flat
             if not name.startswith('head/')}
  expected = set(sources.values())
  extra = sorted(k for k in stored
                 if k not in expected and not k.startswith(_DROPPED))
  if extra:
    raise ConfigError(
        f'{path}: key {extra[0]!r} (and {len(extra) - 1} more) has no place '
        'in the model; the checkpoint is deeper or has other parts than '
        "this ViT config (e.g. a class token with pool='gap').")
  for name, source in sources.items():
    target = flat[name]
    if source not in stored:
      raise ConfigError(
          f'{path}: key {source!r} is missing (the model needs shape '
          f'{tuple(target.shape)} for {name!r}); the file is not an AugReg '
          'ViT checkpoint of this size (patch, width, depth).')
    value = stored[source]
    if (source == POSEMB_KEY and value.ndim == 3
        and value.shape[2] == target.shape[2]
        and value.shape[1] != target.shape[1]):
      prefix = 1 if model.pool == 'cls' else 0
      grid = (image_shape[0] // model.patch_size,
              image_shape[1] // model.patch_size)
      value = resample_posemb(value, grid, prefix)
    if tuple(value.shape) != tuple(target.shape):
      raise ConfigError(
          f'{path}: key {source!r} has shape {tuple(value.shape)}, the model '
          f'needs {tuple(target.shape)} for {name!r}; use the model size the '
          'checkpoint was trained with.')
    out[name] = np.asarray(value, target.dtype)
  return {'params': flax.traverse_util.unflatten_dict(out, sep='/'),
          'batch_stats': {}}

