"""ResNet-9 of Goel et al.'s corrective-unlearning benchmark and of Potion.

A Flax port of ``ResNet9`` / ``resnet9()`` in ``src/resnet.py`` of
drimpossible/corrective-unlearning-bench (Goel et al., "Corrective Machine
Unlearning", TMLR 2024), commit 8b08f06a38da17055ef3639e36f807ab8bfaaba5
(lines 66-109 and 201-205; the file is unchanged since the initial commit
0a65bedffcc9dc4b6222e1af0ef30fe9d6dc55da).  Potion's code,
if-loops/towards_poison_unlearning commit
5b5e83f2579d06ea293e9e0f7d5edabcb5ec61ee, ships the identical ``src/resnet.py``.
Both papers' CIFAR-10 numbers and timings are for this network:

  conv1  conv_bn(3, 64)              3x3, stride 1, pad 1   32x32
  conv2  conv_bn(64, 128, 5, 2, 2)   5x5, stride 2, pad 2   16x16
  res1   x + conv_bn(128, 128)(conv_bn(128, 128)(x))        16x16
  conv3  conv_bn(128, 256), MaxPool2d(2)                     8x8
  res2   x + conv_bn(256, 256)(conv_bn(256, 256)(x))         8x8
  conv4  conv_bn(256, 128, 3, 1, 0)  3x3, stride 1, pad 0    6x6
         AdaptiveMaxPool2d(1), Flatten                       128
  fc     Linear(128, num_classes, bias=False)

where ``conv_bn`` is Conv2d (with bias) -> BatchNorm2d (PyTorch defaults:
eps 1e-5, momentum 0.1, i.e. Flax momentum 0.9, affine) -> CELU(alpha=0.075).
2,276,224 parameters for 10 classes (the convs 2,272,256, the BatchNorms'
scale and bias 2,688, the classifier 1,280); BatchNorm running statistics are
the ``batch_stats`` collection.  No output multiplier.

Differences from Myrtle's ResNet-9 (this package's ``resnet9``, 6.57M
parameters): CELU(0.075) instead of ReLU; conv biases; the second layer is a
5x5 stride-2 conv instead of a 3x3 conv + 2x2 max pool; the second residual
block is at 256 channels (Myrtle's is at 512), after conv3's pool; the last
stage is one unpadded 3x3 conv 256 -> 128 (Myrtle: a 256 -> 512 conv, a pool
and a 512-channel residual block); conv3 pools after BatchNorm and CELU
(Myrtle pools before BatchNorm); the classifier has no bias.  Neither has a
logit multiplier (Myrtle's original 0.125 is not in ``resnet9`` either).

Initialisation follows the authors' ``initialize_weights`` (``src/utils.py``):
PyTorch's default ``reset_parameters`` for convs and the linear layer
(kaiming-uniform with a=sqrt(5), i.e. U(+-1/sqrt(fan_in))), conv biases set
to zero, BatchNorm scale 1 and bias 0.

Departures from the authors' code: the layout is NHWC (a PyTorch weight
(out, in, kh, kw) is a Flax kernel (kh, kw, in, out); the linear weight is
transposed).  Flax's BatchNorm keeps the biased batch variance in its running
variance where PyTorch keeps the unbiased one, a factor n/(n-1) with n the
batch size times the spatial size (>= 18,432 at the authors' batch of 512,
a relative 5e-5); the normalisation in training is the same.  ``width``
(default 64, the authors' network) scales every layer's channels for tests.
Inputs must be at least 11x11 (conv4 is unpadded).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

CELU_ALPHA = 0.075

# torch.nn.Conv2d / nn.Linear reset_parameters(): kaiming_uniform_(a=sqrt(5))
# is U(-b, b) with b = 1/sqrt(fan_in), i.e. variance 1/(3 fan_in).
_TORCH_DEFAULT = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in',
                                                  'uniform')


class ConvBN(nn.Module):
  """Conv2d (bias) -> BatchNorm2d -> CELU(0.075), the authors' ``conv_bn``.

  Attributes:
    features: Output channels.
    kernel_size: Square kernel side.
    stride: Stride.
    padding: Zero padding on every side (PyTorch ``padding=``).
  """

  features: int
  kernel_size: int = 3
  stride: int = 1
  padding: int = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    k, s, p = self.kernel_size, self.stride, self.padding
    x = nn.Conv(self.features, (k, k), strides=(s, s),
                padding=((p, p), (p, p)), use_bias=True,
                kernel_init=_TORCH_DEFAULT,
                bias_init=nn.initializers.zeros, name='conv')(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                     epsilon=1e-5, name='bn')(x)
    return nn.celu(x, alpha=CELU_ALPHA)


class Residual(nn.Module):
  """x + ConvBN(ConvBN(x)), the authors' ``Residual(Sequential(...))``."""

  features: int

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    y = ConvBN(self.features, name='conv_bn_0')(x, train)
    y = ConvBN(self.features, name='conv_bn_1')(y, train)
    return x + y


class ResNet9Goel(nn.Module):
  """Goel et al.'s / Potion's CIFAR ResNet-9 (2,276,224 params, 10 classes).

  Attributes:
    num_classes: Number of output logits.
    width: Channels of conv1 (authors: 64); conv2, res1 and conv4 use 2x,
      conv3 and res2 4x.
  """

  num_classes: int
  width: int = 64

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    w = self.width
    x = ConvBN(w, name='conv1')(x, train)
    x = ConvBN(2 * w, kernel_size=5, stride=2, padding=2,
               name='conv2')(x, train)
    x = Residual(2 * w, name='res1')(x, train)
    x = ConvBN(4 * w, name='conv3')(x, train)
    x = nn.max_pool(x, (2, 2), strides=(2, 2), padding='VALID')
    x = Residual(4 * w, name='res2')(x, train)
    x = ConvBN(2 * w, padding=0, name='conv4')(x, train)
    x = jnp.max(x, axis=(1, 2))
    return nn.Dense(self.num_classes, use_bias=False,
                    kernel_init=_TORCH_DEFAULT, name='fc')(x)

