"""Wide Residual Network (WRN-d-k) with pre-activation basic blocks.

Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016
(arXiv:1605.07146). Pre-activation ordering from He et al., "Identity
Mappings in Deep Residual Networks", ECCV 2016 (arXiv:1603.05027).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

_KAIMING = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def _norm(train: bool) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                      epsilon=1e-5)


class WideBasicBlock(nn.Module):
  """BN-ReLU-Conv3x3-BN-ReLU-Conv3x3 with a 1x1-conv shortcut if shapes differ."""

  features: int
  strides: int = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    s = (self.strides, self.strides)
    o = nn.relu(_norm(train)(x))
    y = nn.Conv(self.features, (3, 3), s, padding='SAME', use_bias=False,
                kernel_init=_KAIMING)(o)
    y = nn.relu(_norm(train)(y))
    y = nn.Conv(self.features, (3, 3), padding='SAME', use_bias=False,
                kernel_init=_KAIMING)(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      # As in the reference implementation, the projection sees the
      # pre-activated input.
      x = nn.Conv(self.features, (1, 1), s, padding='SAME', use_bias=False,
                  kernel_init=_KAIMING)(o)
    return x + y


class WideResNet(nn.Module):
  """WRN-depth-widen_factor (default WRN-28-10, ~36.5M params).

  Attributes:
    num_classes: Number of output logits.
    depth: Total depth; must satisfy ``(depth - 4) % 6 == 0``.
    widen_factor: Channel multiplier k for the stages (16k, 32k, 64k).
  """

  num_classes: int
  depth: int = 28
  widen_factor: int = 10

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    if (self.depth - 4) % 6 != 0 or self.depth < 10:
      raise ValueError(
          f'WideResNet depth must be 6n+4 with n >= 1, got {self.depth}.')
    n = (self.depth - 4) // 6
    k = self.widen_factor
    x = nn.Conv(16, (3, 3), padding='SAME', use_bias=False,
                kernel_init=_KAIMING)(x)
    for i, features in enumerate((16 * k, 32 * k, 64 * k)):
      for j in range(n):
        strides = 2 if i > 0 and j == 0 else 1
        x = WideBasicBlock(features, strides)(x, train)
    x = nn.relu(_norm(train)(x))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes)(x)
