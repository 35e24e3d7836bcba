"""Tests for unlearnjax.models."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unlearnjax.models import MODELS, get_model, init_variables
from unlearnjax.models.wide_resnet import WideResNet

# Small overrides so every model runs quickly on CPU.
_FAST_KWARGS = {
    'small_cnn': {},
    'resnet9': {},
    'resnet18': {},
    'wrn28_10': {'depth': 10, 'widen_factor': 1},
    'vit_tiny': {},
    'vit_b16': {'hidden_size': 32, 'depth': 1, 'num_heads': 2, 'mlp_dim': 32,
                'patch_size': 16},
    'mlp': {'width': 16},
}


def _n_params(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_registry_names():
  assert set(MODELS) == {'small_cnn', 'resnet9', 'wrn28_10', 'resnet18',
                         'vit_tiny', 'vit_b16', 'mlp'}
  assert set(_FAST_KWARGS) == set(MODELS)


@pytest.mark.parametrize('name', sorted(MODELS))
def test_output_shape_32x32x3(name):
  model = get_model(name, num_classes=7, **_FAST_KWARGS[name])
  variables = init_variables(model, jax.random.key(0), (32, 32, 3))
  assert set(variables) == {'params', 'batch_stats'}
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3), jnp.float32)
  logits = model.apply(variables, x, train=False)
  assert logits.shape == (2, 7)
  assert logits.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize('name', ['small_cnn', 'resnet9', 'vit_tiny'])
def test_tiny_8x8x1(name):
  model = get_model(name, num_classes=10)
  variables = init_variables(model, jax.random.key(0), (8, 8, 1))
  x = jnp.ones((2, 8, 8, 1), jnp.float32)
  assert model.apply(variables, x, train=False).shape == (2, 10)


def test_train_updates_batch_stats_eval_is_pure():
  model = get_model('small_cnn', num_classes=10)
  variables = init_variables(model, jax.random.key(0), (8, 8, 1))
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1)) * 3.0 + 1.0
  logits, updates = model.apply(variables, x, train=True,
                                mutable=['batch_stats'])
  assert logits.shape == (4, 10)
  old = jax.tree.leaves(variables['batch_stats'])
  new = jax.tree.leaves(updates['batch_stats'])
  assert len(old) == len(new) > 0
  assert any(not np.allclose(a, b) for a, b in zip(old, new))
  # Eval mode needs no mutable collections and is deterministic.
  out1 = model.apply(variables, x, train=False)
  out2 = model.apply(variables, x, train=False)
  np.testing.assert_array_equal(out1, out2)


def test_unknown_name_raises():
  with pytest.raises(ValueError) as exc:
    get_model('vgg16', num_classes=10)
  msg = str(exc.value)
  for name in MODELS:
    assert name in msg


def test_wrn_default_config():
  model = get_model('wrn28_10', num_classes=10)
  assert isinstance(model, WideResNet)
  assert model.depth == 28
  assert model.widen_factor == 10


def test_wrn_bad_depth_raises():
  model = get_model('wrn28_10', num_classes=10, depth=11, widen_factor=1)
  with pytest.raises(ValueError):
    init_variables(model, jax.random.key(0), (8, 8, 3))


@pytest.mark.parametrize('name,expected', [
    ('resnet9', 6.57e6),
    ('resnet18', 11.17e6),
])
def test_param_counts(name, expected):
  model = get_model(name, num_classes=10)
  shapes = jax.eval_shape(
      lambda k: init_variables(model, k, (32, 32, 3)), jax.random.key(0))
  n = _n_params(shapes['params'])
  assert abs(n - expected) / expected < 0.02, n
