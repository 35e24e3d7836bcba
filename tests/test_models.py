"""Tests for unlearnjax.models."""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from unlearnjax.models import MODELS, get_model, init_variables
from unlearnjax.models.wide_resnet import WideResNet

# Small overrides so every model runs quickly on CPU.
_FAST_KWARGS = {
    'small_cnn': {},
    'resnet9': {},
    'resnet9_goel': {},
    'resnet18': {},
    'wrn28_10': {'depth': 10, 'widen_factor': 1},
    'vit_tiny': {},
    'vit_b16': {'hidden_size': 32, 'depth': 1, 'num_heads': 2, 'mlp_dim': 32,
                'patch_size': 16},
    'mlp': {'width': 16},
    'allcnn': {'filters_percentage': 0.125},
    'small_vgg': {'width': 8},
}


def _n_params(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_registry_names():
  assert set(MODELS) == {'small_cnn', 'resnet9', 'resnet9_goel', 'wrn28_10',
                         'resnet18', 'vit_tiny', 'vit_b16', 'mlp', 'allcnn',
                         'small_vgg'}
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


# Goel et al.'s / Potion's ResNet-9, src/resnet.py:66-109 of
# drimpossible/corrective-unlearning-bench@8b08f06 (identical in
# if-loops/towards_poison_unlearning@5b5e83f): every conv_bn as
# (torch module, flax path, c_in, c_out, kernel, stride, padding, conv bias).
# conv_bn = Conv2d(..., bias=True) -> BatchNorm2d(c_out) -> CELU(0.075).
_GOEL_CONV_BN = (
    ('conv1', 'conv1', 3, 64, 3, 1, 1, True),               # conv_bn(3, 64)
    ('conv2', 'conv2', 64, 128, 5, 2, 2, True),              # (64,128,5,2,2)
    ('res1.module.0', 'res1/conv_bn_0', 128, 128, 3, 1, 1, True),
    ('res1.module.1', 'res1/conv_bn_1', 128, 128, 3, 1, 1, True),
    ('conv3.0', 'conv3', 128, 256, 3, 1, 1, True),           # + MaxPool2d(2)
    ('res2.module.0', 'res2/conv_bn_0', 256, 256, 3, 1, 1, True),
    ('res2.module.1', 'res2/conv_bn_1', 256, 256, 3, 1, 1, True),
    ('conv4.0', 'conv4', 256, 128, 3, 1, 0, True),           # (256,128,3,1,0)
)
_GOEL_FC = (128, False)  # Linear(128, num_classes, bias=False)
_CELU_ALPHA = 0.075


def _goel_torch_param_count(num_classes: int) -> int:
  """The authors' trainable-parameter count from their layer list: per
  conv_bn the conv weight c_in*c_out*k*k (+ c_out bias) and BatchNorm weight
  and bias (2*c_out); the classifier 128*num_classes (no bias)."""
  n = 0
  for _, _, cin, cout, k, _, _, bias in _GOEL_CONV_BN:
    n += cin * cout * k * k + (cout if bias else 0) + 2 * cout
  fc_in, fc_bias = _GOEL_FC
  return n + fc_in * num_classes + (num_classes if fc_bias else 0)


def test_resnet9_goel_param_count_exact():
  # 1,792 + 204,928 + 2*147,584 + 295,168 + 2*590,080 + 295,040 (convs)
  # + 2,688 (BatchNorm) + 1,280 (fc) = 2,276,224 for 10 classes.
  assert _goel_torch_param_count(10) == 2_276_224
  for num_classes in (10, 100):
    model = get_model('resnet9_goel', num_classes=num_classes)
    shapes = jax.eval_shape(
        lambda k, m=model: init_variables(m, k, (32, 32, 3)),
        jax.random.key(0))
    assert _n_params(shapes['params']) == _goel_torch_param_count(num_classes)


def test_resnet9_goel_layers_match_torch_shapes():
  model = get_model('resnet9_goel', num_classes=10)
  variables = init_variables(model, jax.random.key(0), (32, 32, 3))
  params = flax.traverse_util.flatten_dict(variables['params'], sep='/')
  stats = flax.traverse_util.flatten_dict(variables['batch_stats'], sep='/')
  expected, expected_stats = {}, {}
  for _, path, cin, cout, k, _, _, bias in _GOEL_CONV_BN:
    # torch Conv2d weight (c_out, c_in, k, k) = flax kernel (k, k, c_in, c_out)
    expected[f'{path}/conv/kernel'] = (k, k, cin, cout)
    if bias:
      expected[f'{path}/conv/bias'] = (cout,)
    expected[f'{path}/bn/scale'] = (cout,)
    expected[f'{path}/bn/bias'] = (cout,)
    expected_stats[f'{path}/bn/mean'] = (cout,)
    expected_stats[f'{path}/bn/var'] = (cout,)
  expected['fc/kernel'] = (128, 10)  # torch (10, 128), transposed; no bias
  assert {k: v.shape for k, v in params.items()} == expected
  assert {k: v.shape for k, v in stats.items()} == expected_stats
  # The authors' initialize_weights: torch default kaiming-uniform
  # U(+-1/sqrt(fan_in)), conv biases 0, BatchNorm 1 / 0.
  for _, path, cin, _, k, _, _, _ in _GOEL_CONV_BN:
    bound = 1.0 / np.sqrt(cin * k * k)
    kernel = np.asarray(params[f'{path}/conv/kernel'])
    assert np.abs(kernel).max() <= bound
    assert np.abs(kernel).max() > 0.95 * bound
    np.testing.assert_array_equal(params[f'{path}/conv/bias'], 0.0)
    np.testing.assert_array_equal(params[f'{path}/bn/scale'], 1.0)
  assert np.abs(np.asarray(params['fc/kernel'])).max() <= 1.0 / np.sqrt(128)
  # Top-level modules are the authors' [conv1, conv2, res1, conv3, res2,
  # conv4, fc] (methods.py ApplyK.divide_model), in that order.
  assert list(variables['params']) == [
      'conv1', 'conv2', 'res1', 'conv3', 'res2', 'conv4', 'fc']


def _goel_reference_forward(params, stats, x, train):
  """The authors' forward written from _GOEL_CONV_BN with jax.lax only:
  explicit torch paddings, BatchNorm, torch's CELU formula, 2x2 max pool by
  reshape, global max, bias-free linear."""
  def conv_bn(path, h):
    spec = {row[1]: row for row in _GOEL_CONV_BN}[path]
    _, _, _, _, _, s, p, _ = spec
    node = params
    for part in path.split('/'):
      node = node[part]
    h = jax.lax.conv_general_dilated(
        h, node['conv']['kernel'], (s, s), ((p, p), (p, p)),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + node['conv']['bias']
    if train:
      mean, var = h.mean((0, 1, 2)), h.var((0, 1, 2))  # biased, as torch
    else:
      st = stats
      for part in path.split('/'):
        st = st[part]
      mean, var = st['bn']['mean'], st['bn']['var']
    h = ((h - mean) / jnp.sqrt(var + 1e-5) * node['bn']['scale']
         + node['bn']['bias'])
    a = _CELU_ALPHA  # torch CELU: max(0,x) + min(0, a*(exp(x/a)-1))
    return jnp.maximum(0.0, h) + jnp.minimum(0.0, a * (jnp.exp(h / a) - 1.0))

  h = conv_bn('conv2', conv_bn('conv1', x))
  h = h + conv_bn('res1/conv_bn_1', conv_bn('res1/conv_bn_0', h))
  h = conv_bn('conv3', h)
  n, hh, ww, c = h.shape
  h = h.reshape(n, hh // 2, 2, ww // 2, 2, c).max(axis=(2, 4))
  h = h + conv_bn('res2/conv_bn_1', conv_bn('res2/conv_bn_0', h))
  h = conv_bn('conv4', h).max(axis=(1, 2))
  return h @ params['fc']['kernel']


def test_resnet9_goel_matches_reference_forward():
  model = get_model('resnet9_goel', num_classes=10)
  variables = init_variables(model, jax.random.key(0), (32, 32, 3))
  # Perturb every parameter and running statistic so that biases, BatchNorm
  # affine terms and statistics all matter.
  leaves, treedef = jax.tree.flatten(variables['params'])
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = jax.tree.unflatten(treedef, [
      p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
  s_leaves, s_def = jax.tree.flatten(variables['batch_stats'])
  s_keys = jax.random.split(jax.random.key(2), len(s_leaves))
  stats = jax.tree.unflatten(s_def, [
      0.1 * jax.random.normal(k, s.shape) if i % 2 == 0 else
      0.5 + jax.random.uniform(k, s.shape)
      for i, (s, k) in enumerate(zip(s_leaves, s_keys))])
  assert jax.tree.structure(stats) == jax.tree.structure(
      variables['batch_stats'])
  x = jax.random.normal(jax.random.key(3), (2, 32, 32, 3))
  var = {'params': params, 'batch_stats': stats}
  np.testing.assert_allclose(
      model.apply(var, x, train=False),
      _goel_reference_forward(params, stats, x, train=False),
      rtol=1e-4, atol=1e-4)
  out, _ = model.apply(var, x, train=True, mutable=['batch_stats'])
  np.testing.assert_allclose(
      out, _goel_reference_forward(params, stats, x, train=True),
      rtol=1e-4, atol=1e-4)


def test_resnet9_goel_trains():
  model = get_model('resnet9_goel', num_classes=4, width=8)
  variables = init_variables(model, jax.random.key(0), (16, 16, 3))
  x = jax.random.normal(jax.random.key(1), (8, 16, 16, 3))
  y = jnp.arange(8) % 4
  tx = optax.sgd(0.05, momentum=0.9)

  def loss_fn(params, batch_stats):
    logits, upd = model.apply({'params': params, 'batch_stats': batch_stats},
                              x, train=True, mutable=['batch_stats'])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, upd['batch_stats']

  @jax.jit
  def step(params, batch_stats, opt_state):
    (loss, batch_stats), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(params, batch_stats)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  params, batch_stats = variables['params'], variables['batch_stats']
  opt_state = tx.init(params)
  losses = []
  for _ in range(10):
    params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state)
    losses.append(float(loss))
  assert all(np.isfinite(losses))
  assert losses[-1] < 0.5 * losses[0], losses
