"""Penultimate features of M_o: the input of the classifier head.

Captured generically with `flax.linen.intercept_methods`: the input of the
last `nn.Dense`/`nn.DenseGeneral` called in an evaluation-mode forward,
provided its output is the model's logits (every registered model ends in
such a head: small_cnn, resnet9, resnet9_goel, resnet18, wrn28_10, mlp,
allcnn, small_vgg, the ViTs). A model whose logits come from anything else
raises a ValueError naming what it found. Features are centred by the
training-set mean (post-ReLU features are all non-negative, so raw cosines
are uniformly high) before any cosine.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from unlearnjax import grads
from unlearnjax.data.split import Split
from unlearnjax.expansion import _common

if TYPE_CHECKING:
  from unlearnjax.unlearn.base import UnlearnTask

CHUNK_SIZE = 512
HEADS = (nn.Dense, nn.DenseGeneral)


def penultimate(model: nn.Module, variables, images: jax.Array) -> jax.Array:
  """(N, D) inputs of `model`'s classifier head, evaluation mode."""
  calls = []

  def interceptor(next_fn, args, kwargs, context):
    out = next_fn(*args, **kwargs)
    if (context.method_name == '__call__' and args
        and isinstance(context.module, HEADS)):
      calls.append((args[0], out, '/'.join(context.module.path)))
    return out

  with nn.intercept_methods(interceptor):
    logits = model.apply(variables, images, train=False)
  if not calls or calls[-1][1] is not logits:
    found = calls[-1][2] if calls else 'no Dense layer'
    raise ValueError(
        f'{type(model).__name__}: its logits are not the output of a final '
        f'nn.Dense head (last Dense called: {found}); the representation and '
        'label-consistency scores need the head\'s input as the penultimate '
        'features. Use the gradient scores, or end the model in nn.Dense.')
  features = calls[-1][0]
  return features.reshape(features.shape[0], -1).astype(jnp.float32)


@functools.lru_cache(maxsize=16)
def _jitted_penultimate(model: nn.Module):
  return jax.jit(functools.partial(penultimate, model))


def split_features(task: 'UnlearnTask', split: Split) -> np.ndarray:
  """(N, D) penultimate features of M_o on `split`, cached per (M_o, split)."""

  def compute():
    fn = _jitted_penultimate(task.model)
    variables = {'params': task.original['params'],
                 'batch_stats': task.original.get('batch_stats', {})}
    out = []
    n = len(split)
    for (x,), mask in grads.padded_chunks((split.images,),
                                          min(CHUNK_SIZE, max(n, 1)),
                                          CHUNK_SIZE):
      out.append(np.asarray(fn(variables, x))[mask > 0])
    return np.concatenate(out)

  return task.cached(f'expansion/features/{_common.split_digest(split)}', None,
                     compute)


def centred(task: 'UnlearnTask', split: Split) -> np.ndarray:
  """Features of `split` minus the training-set mean feature."""
  centre = task.cached(
      f'expansion/features/centre/{_common.split_digest(task.train)}', None,
      lambda: split_features(task, task.train).mean(axis=0))
  return split_features(task, split) - centre
