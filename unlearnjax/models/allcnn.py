"""All-CNN of Projected-Gradient Unlearning's CIFAR-10 experiments (PGU §4).

A Flax port of ``AllCNN`` in ``backbone/allcnn.py`` (with ``Conv`` from
``backbone/layers.py``) of hnanhtuan/projected_gradient_unlearning, commit
5ad5cc1215a0ca113b6a648d690841ae411cea38: the All-CNN-C of Springenberg et
al. ("Striving for Simplicity: The All Convolutional Net", ICLR-W 2015) with
batch normalisation, as PGU §4 uses it (the authors' configs
``exp/learned/allcnn_cifar10/*/config.yaml``: ``num_classes: 10``,
``dropout: false``, ``batch_norm`` at its default True):

  conv1  Conv(3, 96)      3x3, stride 1, pad 1   32x32
  conv2  Conv(96, 96)     3x3, stride 1, pad 1   32x32
  conv3  Conv(96, 192)    3x3, stride 2, pad 1   16x16
         (Dropout(0.5) if dropout)
  conv4  Conv(192, 192)   3x3, stride 1, pad 1   16x16
  conv5  Conv(192, 192)   3x3, stride 1, pad 1   16x16
  conv6  Conv(192, 192)   3x3, stride 2, pad 1    8x8
         (Dropout(0.5) if dropout)
  conv7  Conv(192, 192)   3x3, stride 1, pad 1    8x8
  conv8  Conv(192, 192)   1x1, stride 1, pad 0    8x8
         AvgPool2d(8), Flatten                   192
  fc     Linear(192, num_classes)

where ``Conv`` is Conv2d (no bias when batch-normalised) -> BatchNorm2d
(PyTorch defaults: eps 1e-5, momentum 0.1, i.e. Flax momentum 0.9) -> ReLU.
1,620,010 parameters for 10 classes (convs 1,615,392, BatchNorm scale and
bias 2,688, classifier 1,930). Unlike the original All-CNN-C, the classifier
is a Linear layer after the pooling (not a 1x1 conv to the classes), and
there is batch normalisation.

Initialisation: PyTorch's defaults (the authors apply none of their own):
kaiming-uniform with a = sqrt(5), i.e. U(+-1/sqrt(fan_in)), for kernels and
biases; BatchNorm scale 1, bias 0.

Departures: NHWC layout (a PyTorch weight (out, in, kh, kw) is a Flax kernel
(kh, kw, in, out)). The final ``AvgPool2d(8)`` is a global mean over the
spatial axes: the same on the authors' 32x32 inputs (an 8x8 map), and it
lets smaller test inputs through (the authors' model takes 32x32 only).
The authors' boolean ``dropout`` (``nn.Dropout()``, p = 0.5, off in their
configs) is ``dropout_rate`` (default 0.0, so no dropout rng is needed; with
a rate > 0 and ``train=True`` pass ``rngs={'dropout': key}``).
``filters_percentage`` is the authors' width multiplier (96 and 192
channels scaled, truncated to int), useful for small tests.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

# torch.nn.Conv2d / nn.Linear reset_parameters(): kaiming_uniform_(a=sqrt(5))
# is U(-b, b) with b = 1/sqrt(fan_in), i.e. variance 1/(3 fan_in).
TORCH_KERNEL_INIT = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in',
                                                     'uniform')


def torch_bias_init(fan_in: int):
  """PyTorch's default bias initialiser, U(+-1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class ConvBNReLU(nn.Module):
  """The authors' ``Conv``: Conv2d -> BatchNorm2d -> ReLU, padding
  (k - 1) // 2 on every side; the conv has a bias only without BatchNorm.

  Attributes:
    features: Output channels.
    kernel_size: Square kernel side.
    stride: Stride.
    batch_norm: Batch-normalise (then the conv has no bias).
  """

  features: int
  kernel_size: int = 3
  stride: int = 1
  batch_norm: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    k, s = self.kernel_size, self.stride
    p = (k - 1) // 2
    x = nn.Conv(self.features, (k, k), strides=(s, s),
                padding=((p, p), (p, p)), use_bias=not self.batch_norm,
                kernel_init=TORCH_KERNEL_INIT,
                bias_init=torch_bias_init(k * k * x.shape[-1]),
                name='conv')(x)
    if self.batch_norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                       epsilon=1e-5, name='bn')(x)
    return nn.relu(x)


class AllCNN(nn.Module):
  """PGU's All-CNN (1,620,010 parameters for 10 classes).

  Attributes:
    num_classes: Number of output logits.
    filters_percentage: Width multiplier of the 96 / 192 channels (authors'
      name; 1.0 is their network).
    batch_norm: BatchNorm after every conv (authors' default True).
    dropout_rate: Dropout after conv3 and conv6 (authors: 0.5 when their
      ``dropout`` flag is on; their configs leave it off). Train only.
  """

  num_classes: int
  filters_percentage: float = 1.0
  batch_norm: bool = True
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    n1 = int(96 * self.filters_percentage)
    n2 = int(192 * self.filters_percentage)
    layers = ((n1, 3, 1), (n1, 3, 1), (n2, 3, 2), None,
              (n2, 3, 1), (n2, 3, 1), (n2, 3, 2), None,
              (n2, 3, 1), (n2, 1, 1))
    index = 0
    for layer in layers:
      if layer is None:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        continue
      features, kernel, stride = layer
      index += 1
      x = ConvBNReLU(features, kernel, stride, self.batch_norm,
                     name=f'conv{index}')(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, kernel_init=TORCH_KERNEL_INIT,
                    bias_init=torch_bias_init(x.shape[-1]), name='fc')(x)
