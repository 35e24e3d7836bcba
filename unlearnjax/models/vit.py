"""Vision Transformer (ViT) classifier.

Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image
Recognition at Scale", ICLR 2021 (arXiv:2010.11929), in the style of the
big_vision / Flax ``vision_transformer`` implementations: conv patch
embedding, learned class token and position embeddings, pre-LayerNorm encoder
blocks, final LayerNorm and a linear head (no pre-logits representation
layer). Used as ViT-B/16 in "Potion: Towards Poison Unlearning" (§4.2).

Two registered sizes: ``vit_tiny`` (patch 2, width 64, depth 4) for CPU tests
and the embedded 8x8 digits default, and ``vit_b16`` (ViT-B/16, ~86M params)
for 224x224 images on GPUs.

There is no batch normalisation, so ``batch_stats`` is empty. ``train`` only
switches dropout on; with ``dropout_rate > 0`` and ``train=True`` the caller
must pass ``rngs={'dropout': key}``. The default ``dropout_rate=0.0`` keeps
the model deterministic, so the library's train step (which passes no rngs)
works unchanged.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

_POSEMB_INIT = nn.initializers.normal(stddev=0.02)


class MlpBlock(nn.Module):
  """Dense(mlp_dim)-GELU-Dropout-Dense(width)-Dropout."""

  mlp_dim: int
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    width = x.shape[-1]
    dense = lambda n: nn.Dense(
        n, kernel_init=nn.initializers.xavier_uniform(),
        bias_init=nn.initializers.normal(stddev=1e-6))
    x = nn.gelu(dense(self.mlp_dim)(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = dense(width)(x)
    return nn.Dropout(self.dropout_rate, deterministic=not train)(x)


class EncoderBlock(nn.Module):
  """Pre-LN transformer block: x + MHA(LN(x)), then x + MLP(LN(x))."""

  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    y = nn.LayerNorm()(x)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads,
        kernel_init=nn.initializers.xavier_uniform(),
        deterministic=True)(y)
    y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
    x = x + y
    y = nn.LayerNorm()(x)
    return x + MlpBlock(self.mlp_dim, self.dropout_rate)(y, train)


class ViT(nn.Module):
  """Vision Transformer classifier returning logits.

  Attributes:
    num_classes: Number of output logits.
    patch_size: Square patch side; must divide the image height and width.
    hidden_size: Token width.
    depth: Number of encoder blocks.
    num_heads: Attention heads per block (must divide ``hidden_size``).
    mlp_dim: Hidden width of each block's MLP.
    dropout_rate: Dropout on embeddings, attention output and MLP (train only).
    pool: ``'cls'`` (class-token output) or ``'gap'`` (mean over patch
      tokens; no class token is added).
    head_zeroinit: Zero-initialise the head kernel and bias, as big_vision
      does by default (at init all logits are then equal and only the head
      gets non-zero gradients until its first update).
  """

  num_classes: int
  patch_size: int
  hidden_size: int
  depth: int
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  pool: str = 'cls'
  head_zeroinit: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    if self.pool not in ('cls', 'gap'):
      raise ValueError(f"pool must be 'cls' or 'gap', got {self.pool!r}.")
    h, w = x.shape[1], x.shape[2]
    p = self.patch_size
    if h % p or w % p:
      raise ValueError(
          f'Image size {h}x{w} is not divisible by patch_size {p}.')
    x = nn.Conv(self.hidden_size, (p, p), strides=(p, p), padding='VALID',
                name='embedding')(x)
    n = x.shape[0]
    x = x.reshape(n, -1, self.hidden_size)
    if self.pool == 'cls':
      cls = self.param('cls', nn.initializers.zeros, (1, 1, self.hidden_size))
      x = jnp.concatenate([jnp.tile(cls, (n, 1, 1)).astype(x.dtype), x], 1)
    x = x + self.param('pos_embedding', _POSEMB_INIT, (1, *x.shape[1:]))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    for i in range(self.depth):
      x = EncoderBlock(self.num_heads, self.mlp_dim, self.dropout_rate,
                       name=f'encoderblock_{i}')(x, train)
    x = nn.LayerNorm(name='encoder_norm')(x)
    x = x[:, 0] if self.pool == 'cls' else jnp.mean(x, axis=1)
    return nn.Dense(self.num_classes, name='head',
                    kernel_init=head_kernel_init(self.head_zeroinit),
                    bias_init=nn.initializers.zeros)(x)


def head_kernel_init(zeroinit: bool) -> nn.initializers.Initializer:
  """The head kernel's initialiser (bias: zeros), shared with the
  pretrained-weights loader (`models.pretrained`)."""
  return (nn.initializers.zeros if zeroinit
          else nn.initializers.lecun_normal())


_TINY = dict(patch_size=2, hidden_size=64, depth=4, num_heads=4, mlp_dim=128)
_B16 = dict(patch_size=16, hidden_size=768, depth=12, num_heads=12,
            mlp_dim=3072)


def vit_tiny(num_classes: int, **overrides: Any) -> ViT:
  """Tiny ViT (patch 2, width 64, depth 4, 4 heads, MLP 128) for CPU."""
  return ViT(num_classes=num_classes, **{**_TINY, **overrides})


def vit_b16(num_classes: int, **overrides: Any) -> ViT:
  """ViT-B/16 (patch 16, width 768, depth 12, 12 heads, MLP 3072)."""
  return ViT(num_classes=num_classes, **{**_B16, **overrides})
