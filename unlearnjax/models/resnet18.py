"""CIFAR-style ResNet-18.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016
(arXiv:1512.03385), with the common CIFAR adaptation: a 3x3 stride-1 stem and
no initial max pool.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

_KAIMING = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


class BasicBlock(nn.Module):
  """Two 3x3 conv-BN layers with an identity or 1x1-conv projection shortcut."""

  features: int
  strides: int = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    norm = lambda: nn.BatchNorm(
        use_running_average=not train, momentum=0.9, epsilon=1e-5)
    s = (self.strides, self.strides)
    y = nn.Conv(self.features, (3, 3), s, padding='SAME', use_bias=False,
                kernel_init=_KAIMING)(x)
    y = nn.relu(norm()(y))
    y = nn.Conv(self.features, (3, 3), padding='SAME', use_bias=False,
                kernel_init=_KAIMING)(y)
    y = norm()(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = nn.Conv(self.features, (1, 1), s, padding='SAME', use_bias=False,
                  kernel_init=_KAIMING)(x)
      x = norm()(x)
    return nn.relu(x + y)


class ResNet18(nn.Module):
  """ResNet-18 for small images (~11.17M params for 10 classes).

  Attributes:
    num_classes: Number of output logits.
    stage_sizes: BasicBlocks per stage (default 2, 2, 2, 2).
    width: Channels of the first stage; stage i uses ``width * 2**i``.
  """

  num_classes: int
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  width: int = 64

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = nn.Conv(self.width, (3, 3), padding='SAME', use_bias=False,
                kernel_init=_KAIMING)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                     epsilon=1e-5)(x)
    x = nn.relu(x)
    for i, n_blocks in enumerate(self.stage_sizes):
      for j in range(n_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = BasicBlock(self.width * 2**i, strides)(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes)(x)
