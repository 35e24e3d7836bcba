"""Small convolutional network for tiny images (e.g. 8x8 scikit-learn digits).

A compact conv-BN-ReLU stack in the style of the VGG family (Simonyan &
Zisserman, 2015, arXiv:1409.1556) with batch normalisation (Ioffe & Szegedy,
2015, arXiv:1502.03167) and global average pooling (Lin et al., 2014,
arXiv:1312.4400).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class SmallCNN(nn.Module):
  """Conv(w)-Conv(2w)-AvgPool-Conv(2w)-GAP-Dense classifier.

  Attributes:
    num_classes: Number of output logits.
    width: Base channel count; the later convolutions use ``2 * width``.
  """

  num_classes: int
  width: int = 32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    norm = lambda: nn.BatchNorm(
        use_running_average=not train, momentum=0.9, epsilon=1e-5)
    x = nn.Conv(self.width, (3, 3), padding='SAME', use_bias=False)(x)
    x = nn.relu(norm()(x))
    x = nn.Conv(2 * self.width, (3, 3), padding='SAME', use_bias=False)(x)
    x = nn.relu(norm()(x))
    if x.shape[1] >= 2 and x.shape[2] >= 2:
      x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = nn.Conv(2 * self.width, (3, 3), padding='SAME', use_bias=False)(x)
    x = nn.relu(norm()(x))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes)(x)
