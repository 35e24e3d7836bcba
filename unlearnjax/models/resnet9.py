"""ResNet-9 from the Myrtle.ai DAWNBench CIFAR-10 entry.

D. Page, "How to train your ResNet" (Myrtle.ai, 2018); the architecture of the
fastest DAWNBench CIFAR-10 submission (Coleman et al., 2017). ReLU, bias-free
convs, 6.57M parameters for 10 classes; Myrtle's 0.125 logit scale is not
applied.

This is not the ResNet-9 that Goel et al.'s corrective-unlearning benchmark
and Potion train (2.28M parameters, CELU, a 5x5 stride-2 second conv, conv
biases): that one is ``resnet9_goel`` (``resnet9_goel.py``), and their CIFAR
numbers and timings are for it.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

_KAIMING = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def _max_pool2(x: jnp.ndarray) -> jnp.ndarray:
  """2x2 max pool, skipped if the spatial size is already below 2."""
  if x.shape[1] < 2 or x.shape[2] < 2:
    return x
  return nn.max_pool(x, (2, 2), strides=(2, 2))


class ConvBN(nn.Module):
  """3x3 conv (no bias) -> BatchNorm -> ReLU, with optional 2x2 max pool."""

  features: int
  pool: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = nn.Conv(self.features, (3, 3), padding='SAME', use_bias=False,
                kernel_init=_KAIMING)(x)
    if self.pool:
      x = _max_pool2(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                     epsilon=1e-5)(x)
    return nn.relu(x)


class Residual(nn.Module):
  """x + ConvBN(ConvBN(x))."""

  features: int

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    y = ConvBN(self.features)(x, train)
    y = ConvBN(self.features)(y, train)
    return x + y


class ResNet9(nn.Module):
  """Myrtle ResNet-9 (~6.57M params for 10 classes).

  prep(64) -> layer1(128, pool, residual) -> layer2(256, pool)
  -> layer3(512, pool, residual) -> global max pool -> dense.

  Attributes:
    num_classes: Number of output logits.
    width: Channels of the prep layer; later stages use 2x, 4x, 8x.
  """

  num_classes: int
  width: int = 64

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    w = self.width
    x = ConvBN(w)(x, train)
    x = ConvBN(2 * w, pool=True)(x, train)
    x = Residual(2 * w)(x, train)
    x = ConvBN(4 * w, pool=True)(x, train)
    x = ConvBN(8 * w, pool=True)(x, train)
    x = Residual(8 * w)(x, train)
    x = jnp.max(x, axis=(1, 2))
    return nn.Dense(self.num_classes)(x)
