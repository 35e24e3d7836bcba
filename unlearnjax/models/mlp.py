"""A multilayer perceptron on flattened images.

Pawelczyk et al. (2024, §4.3) detect Gaussian poisons through the input
gradient at the clean image. On the small embedded digits a convolutional
network with global pooling barely depends on per-pixel noise (docs/
DEVELOPING.md), while a dense first layer sees every pixel separately and
memorises the noise of the samples it fits, which is what the poison-removal
study needs to measure.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
  """Flatten, `depth` × (Dense(width), ReLU), Dense(num_classes).

  Attributes:
    num_classes: number of output logits.
    width: hidden units per layer.
    depth: number of hidden layers.
  """

  num_classes: int
  width: int = 512
  depth: int = 2

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    del train  # no BatchNorm or dropout
    x = x.reshape(x.shape[0], -1)
    for _ in range(self.depth):
      x = nn.relu(nn.Dense(self.width)(x))
    return nn.Dense(self.num_classes)(x)
