"""Name -> model-class registry and variable initialisation helper."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from unlearnjax.errors import ConfigError
from unlearnjax.models.allcnn import AllCNN
from unlearnjax.models.mlp import MLP
from unlearnjax.models.pretrained import load_vit_npz
from unlearnjax.models.resnet18 import ResNet18
from unlearnjax.models.resnet9 import ResNet9
from unlearnjax.models.resnet9_goel import ResNet9Goel
from unlearnjax.models.small_cnn import SmallCNN
from unlearnjax.models.small_vgg import SmallVGG
from unlearnjax.models.vit import vit_b16, vit_tiny
from unlearnjax.models.wide_resnet import WideResNet

MODELS: dict[str, Callable[..., nn.Module]] = {
    'small_cnn': SmallCNN,
    'resnet9': ResNet9,
    'resnet9_goel': ResNet9Goel,
    'wrn28_10': WideResNet,
    'resnet18': ResNet18,
    'vit_tiny': vit_tiny,
    'vit_b16': vit_b16,
    'mlp': MLP,
    'allcnn': AllCNN,
    'small_vgg': SmallVGG,
}

# Models whose pretrained weights can be read from a local file:
# name -> loader(model, path, image_shape, key) -> variables.
PRETRAINED_LOADERS: dict[str, Callable[..., dict[str, Any]]] = {
    'vit_tiny': load_vit_npz,
    'vit_b16': load_vit_npz,
}


def get_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
  """Builds the registered model ``name`` with ``num_classes`` outputs.

  Extra keyword arguments override the model's other fields (e.g.
  ``depth=10, widen_factor=1`` for ``'wrn28_10'``).

  Raises:
    ValueError: if ``name`` is not registered.
  """
  if name not in MODELS:
    raise ValueError(
        f'Unknown model {name!r}; valid names: {", ".join(sorted(MODELS))}.')
  return MODELS[name](num_classes=num_classes, **kwargs)


def init_variables(model: nn.Module, key: jax.Array,
                   image_shape: Sequence[int]) -> dict[str, Any]:
  """Initialises ``model`` on a zero batch of shape ``(1, *image_shape)``.

  Returns:
    A plain dict ``{'params': ..., 'batch_stats': ...}``; ``batch_stats`` is
    an empty dict for models without batch normalisation.
  """
  variables = model.init(key, jnp.zeros((1, *image_shape), jnp.float32),
                         train=False)
  variables = dict(variables)
  return {
      'params': variables['params'],
      'batch_stats': variables.get('batch_stats', {}),
  }


def pretrained_variables(name: str, path: str, num_classes: int,
                         image_shape: Sequence[int], key: jax.Array,
                         **kwargs: Any) -> dict[str, Any]:
  """``{'params', 'batch_stats'}`` of ``get_model(name, num_classes,
  **kwargs)`` from the pretrained weights in ``path`` (ViTs: an AugReg
  ``.npz``, `pretrained.load_vit_npz`), with a fresh head for
  ``num_classes`` (initialised with ``key``).

  Raises:
    ConfigError: ``name`` has no loader, or the file is missing or does not
      fit the model (the loader's message names the key and shapes).
  """
  if name not in PRETRAINED_LOADERS:
    raise ConfigError(
        f'Model {name!r} has no pretrained-weights loader; use one of '
        f'{", ".join(sorted(PRETRAINED_LOADERS))} or pretrain instead.')
  model = get_model(name, num_classes, **kwargs)
  return PRETRAINED_LOADERS[name](model, path, tuple(image_shape), key)
