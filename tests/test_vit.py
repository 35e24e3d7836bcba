"""Tests for unlearnjax.models.vit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from unlearnjax.models import get_model, init_variables
from unlearnjax.models.vit import ViT


def _n_params(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.fixture(scope='module')
def tiny():
  """vit_tiny (random head) and its variables for 8x8x1 inputs."""
  model = get_model('vit_tiny', 10, head_zeroinit=False)
  init = jax.jit(lambda k: init_variables(model, k, (8, 8, 1)))
  return model, init(jax.random.key(0))


def test_registry_builds_vit_with_overrides():
  model = get_model('vit_tiny', 10)
  assert isinstance(model, ViT)
  assert (model.patch_size, model.hidden_size, model.depth, model.num_heads,
          model.mlp_dim) == (2, 64, 4, 4, 128)
  assert model.dropout_rate == 0.0
  assert get_model('vit_tiny', 10, depth=2).depth == 2
  b16 = get_model('vit_b16', 1000)
  assert (b16.patch_size, b16.hidden_size, b16.depth, b16.num_heads,
          b16.mlp_dim) == (16, 768, 12, 12, 3072)


def _check_logits(model, variables, shape):
  assert variables['batch_stats'] == {}
  x = jax.random.normal(jax.random.key(1), (2, *shape), jnp.float32)
  logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  assert logits.shape == (2, 10)
  assert logits.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(logits)))
  assert not np.allclose(logits[0], logits[1])


def test_output_shape_8x8x1(tiny):
  _check_logits(*tiny, (8, 8, 1))


@pytest.mark.parametrize('pool', ['cls', 'gap'])
def test_output_shape_32x32x3(pool):
  model = get_model('vit_tiny', 10, pool=pool, depth=1, head_zeroinit=False)
  variables = jax.jit(lambda k: init_variables(model, k, (32, 32, 3)))(
      jax.random.key(0))
  _check_logits(model, variables, (32, 32, 3))
  n_tokens = 256 + (pool == 'cls')
  assert variables['params']['pos_embedding'].shape == (1, n_tokens, 64)
  assert ('cls' in variables['params']) == (pool == 'cls')


def test_head_zeroinit_default():
  model = get_model('vit_tiny', 10, depth=1)
  variables = jax.jit(lambda k: init_variables(model, k, (8, 8, 1)))(
      jax.random.key(0))
  head = variables['params']['head']
  assert not np.any(head['kernel']) and not np.any(head['bias'])
  pos = variables['params']['pos_embedding']
  assert pos.shape == (1, 17, 64)
  assert 0.01 < float(jnp.std(pos)) < 0.03


def test_train_apply_with_empty_batch_stats(tiny):
  """The library's training call: mutable=['batch_stats'], no rngs."""
  model, variables = tiny
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
  logits, updates = jax.jit(lambda p, x: model.apply(
      {'params': p, 'batch_stats': {}}, x, train=True,
      mutable=['batch_stats']))(variables['params'], x)
  assert logits.shape == (4, 10)
  assert jax.tree.leaves(updates.get('batch_stats', {})) == []
  np.testing.assert_allclose(logits, model.apply(variables, x, train=False),
                             rtol=1e-6, atol=1e-6)


def test_dropout_needs_rng_and_is_off_in_eval(tiny):
  model, variables = tiny
  model = model.clone(dropout_rate=0.5)
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
  a = model.apply(variables, x, train=True,
                  rngs={'dropout': jax.random.key(2)})
  b = model.apply(variables, x, train=True,
                  rngs={'dropout': jax.random.key(3)})
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(model.apply(variables, x, train=False),
                                model.apply(variables, x, train=False))


def test_per_sample_grads_vmap_matches_loop(tiny):
  model, variables = tiny
  params, bs = variables['params'], variables['batch_stats']
  assert bs == {}

  def loss(p, image, label):
    logits = model.apply({'params': p, 'batch_stats': bs}, image[None],
                         train=False)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, label[None])[0]

  images = jax.random.normal(jax.random.key(1), (5, 8, 8, 1))
  labels = jnp.arange(5) % 10
  batched = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0)))(
      params, images, labels)
  grad = jax.jit(jax.grad(loss))
  for i in range(len(images)):
    single = grad(params, images[i], labels[i])
    for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(single)):
      np.testing.assert_allclose(a[i], b, rtol=1e-4, atol=1e-5)
  # Gradients reach the encoder (not only the head).
  emb = batched['embedding']['kernel']
  assert float(jnp.max(jnp.abs(emb))) > 0


@pytest.mark.parametrize('shape', [(9, 9, 1), (8, 10, 3)])
def test_patch_size_must_divide_image(shape):
  model = get_model('vit_tiny', 10, patch_size=4)
  with pytest.raises(ValueError, match='divisible by patch_size'):
    init_variables(model, jax.random.key(0), shape)


def test_bad_pool_raises():
  model = get_model('vit_tiny', 10, pool='max')
  with pytest.raises(ValueError, match='pool'):
    init_variables(model, jax.random.key(0), (8, 8, 1))


def test_vit_b16_param_count():
  model = get_model('vit_b16', 1000)
  shapes = jax.eval_shape(
      lambda k: init_variables(model, k, (224, 224, 3)), jax.random.key(0))
  n = _n_params(shapes['params'])
  assert 85e6 < n < 87.5e6, n
  assert shapes['batch_stats'] == {}
