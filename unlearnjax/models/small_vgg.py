"""SmallVGG of Projected-Gradient Unlearning's CIFAR-10 experiments (PGU §4).

PGU §4 calls it "a small variation of VGG model of 3 convolutional layers and
2 linear layers", with details in the source code: a Flax port of
``SmallVGG`` in ``backbone/small_vgg.py`` of
hnanhtuan/projected_gradient_unlearning, commit
5ad5cc1215a0ca113b6a648d690841ae411cea38:

  conv1  Conv2d(3, 128)    3x3, pad 1, bias -> ReLU -> MaxPool(2) -> BN  16x16
  conv2  Conv2d(128, 256)  3x3, pad 1, bias -> ReLU -> MaxPool(2) -> BN   8x8
  conv3  Conv2d(256, 512)  3x3, pad 1, bias -> ReLU -> BN -> MaxPool(2)   4x4
         Flatten                                                        8192
         Dropout(dropout)
  fc1    Linear(8192, 512) -> ReLU -> BatchNorm1d(512)
  fc2    Linear(512, num_classes)

(note the pooling sits before the BatchNorm in the first two blocks and after
it in the third, as in the authors' code). BatchNorm: PyTorch defaults (eps
1e-5, momentum 0.1, i.e. Flax momentum 0.9, affine). 5,681,674 parameters
for 10 classes (convs 1,478,912, linears 4,199,946, BatchNorm scale and bias
2,816).

Initialisation: PyTorch's defaults (the authors apply none of their own):
U(+-1/sqrt(fan_in)) for kernels and biases; BatchNorm scale 1, bias 0.

Departures: NHWC layout, so the flattened 4x4x512 map is in (h, w, c)
order where PyTorch's is (c, h, w), a fixed permutation of fc1's input rows
(the same function class; it matters only to port torch weights). fc1 takes
whatever the flattened map holds (the authors' 8192 needs 32x32 inputs; an
8x8 test input gives 512). The authors' class default ``dropout=0.`` is
``dropout_rate=0.0`` here, so the library's train step (no rngs) works;
their SmallVGG training configs (``exp/learned/smallvgg_cifar10/*``) set
``dropout: 0.5``: pass ``dropout_rate=0.5`` and ``rngs={'dropout': key}``
to train as they did. ``width`` (default 128, the authors' network) scales
the convs (width, 2 width, 4 width) and fc1 (4 width), for small tests.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from unlearnjax.models.allcnn import TORCH_KERNEL_INIT, torch_bias_init


class SmallVGG(nn.Module):
  """PGU's SmallVGG (5,681,674 parameters for 10 classes, 32x32 inputs).

  Attributes:
    num_classes: Number of output logits.
    width: Channels of conv1 (authors: 128); conv2 has 2x, conv3 and fc1 4x.
    dropout_rate: Dropout before fc1 (train only; the authors' training
      configs use 0.5, their class default 0.0).
  """

  num_classes: int
  width: int = 128
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    norm = lambda name: nn.BatchNorm(use_running_average=not train,
                                     momentum=0.9, epsilon=1e-5, name=name)
    pool = lambda y: nn.max_pool(y, (2, 2), strides=(2, 2), padding='VALID')

    def conv(y, features, name):
      return nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)),
                     kernel_init=TORCH_KERNEL_INIT,
                     bias_init=torch_bias_init(9 * y.shape[-1]),
                     name=name)(y)

    def dense(y, features, name):
      return nn.Dense(features, kernel_init=TORCH_KERNEL_INIT,
                      bias_init=torch_bias_init(y.shape[-1]), name=name)(y)

    w = self.width
    x = norm('bn1')(pool(nn.relu(conv(x, w, 'conv1'))))
    x = norm('bn2')(pool(nn.relu(conv(x, 2 * w, 'conv2'))))
    x = pool(norm('bn3')(nn.relu(conv(x, 4 * w, 'conv3'))))
    x = x.reshape(x.shape[0], -1)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = norm('bn4')(nn.relu(dense(x, 4 * w, 'fc1')))
    return dense(x, self.num_classes, 'fc2')
