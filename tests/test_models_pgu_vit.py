"""PGU's AllCNN and SmallVGG (PGU §4; hnanhtuan/projected_gradient_unlearning
backbone/) and the AugReg ViT .npz loader (models.pretrained)."""

import os

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.ndimage

from unlearnjax import models
from unlearnjax import parallel
from unlearnjax import representations as reps
from unlearnjax.data.split import Split
from unlearnjax.errors import ConfigError
from unlearnjax.models.allcnn import AllCNN
from unlearnjax.models.pretrained import augreg_key
from unlearnjax.models.small_vgg import SmallVGG
from unlearnjax.models.vit import ViT
from unlearnjax.studies import potion
from unlearnjax.unlearn import pgu
import model_helpers


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _flat(tree) -> dict:
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep='/')


# The authors' layers (backbone/allcnn.py, backbone/small_vgg.py), as
# (kind, in, out, kernel side, bias) rows; BatchNorm layers as ('bn', c).
def _allcnn_layers(classes, n1=96, n2=192):
  convs = [(3, n1, 3), (n1, n1, 3), (n1, n2, 3), (n2, n2, 3), (n2, n2, 3),
           (n2, n2, 3), (n2, n2, 3), (n2, n2, 1)]
  rows = []
  for cin, cout, k in convs:
    rows += [('conv', cin, cout, k, False), ('bn', cout)]
  return rows + [('linear', n2, classes, 1, True)]


def _small_vgg_layers(classes):
  return [('conv', 3, 128, 3, True), ('bn', 128),
          ('conv', 128, 256, 3, True), ('bn', 256),
          ('conv', 256, 512, 3, True), ('bn', 512),
          ('linear', 8192, 512, 1, True), ('bn', 512),
          ('linear', 512, classes, 1, True)]


def _torch_count(rows) -> int:
  total = 0
  for row in rows:
    if row[0] == 'bn':
      total += 2 * row[1]  # weight and bias (running stats are buffers)
    else:
      _, cin, cout, k, bias = row
      total += k * k * cin * cout + (cout if bias else 0)
  return total


@pytest.mark.parametrize('name,cls,rows,expected', [
    ('allcnn', AllCNN, _allcnn_layers(10), 1_620_010),
    ('small_vgg', SmallVGG, _small_vgg_layers(10), 5_681_674),
])
def test_paper_models_registered_with_the_authors_sizes(name, cls, rows,
                                                        expected):
  model = models.get_model(name, 10)
  assert isinstance(model, cls)
  assert model.dropout_rate == 0.0
  shapes = jax.eval_shape(lambda: models.init_variables(
      model, jax.random.key(0), (32, 32, 3)))
  assert _torch_count(rows) == expected
  assert _count(shapes['params']) == expected
  # batch_stats: mean and var of every BatchNorm.
  n_bn = sum(row[1] for row in rows if row[0] == 'bn')
  assert _count(shapes['batch_stats']) == 2 * n_bn
  # Every conv / linear kernel, in call order, has the authors' shape.
  kernels = [tuple(v.shape) for k, v in _flat(shapes['params']).items()
             if k.endswith('kernel')]
  want = [(r[3], r[3], r[1], r[2]) if r[0] == 'conv' else (r[1], r[2])
          for r in rows if r[0] != 'bn']
  assert sorted(kernels) == sorted(want)
  logits = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False), shapes,
      jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32))
  assert logits.shape == (2, 10)
  # Training mode: BatchNorm statistics update; the authors' dropout with
  # a rate > 0 takes a dropout rng.
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  out, updates = jax.eval_shape(lambda v, x: model.apply(
      v, x, train=True, mutable=['batch_stats']), shapes, x)
  assert out.shape == (2, 10)
  assert (jax.tree.map(lambda a: a.shape, updates['batch_stats'])
          == jax.tree.map(lambda a: a.shape, shapes['batch_stats']))
  dropped = models.get_model(name, 10, dropout_rate=0.5)
  out, _ = jax.eval_shape(lambda v, x: dropped.apply(
      v, x, train=True, mutable=['batch_stats'],
      rngs={'dropout': jax.random.key(0)}), shapes, x)
  assert out.shape == (2, 10)


def test_allcnn_strides_and_small_vgg_pooling_seen_by_pgu():
  """The layers PGU captures, in call order, with their input grids: the
  authors' strides (AllCNN) and pools (SmallVGG: 8192 = 4x4x512 into fc1)."""
  def captured(model):
    variables = jax.eval_shape(lambda: models.init_variables(
        model, jax.random.key(0), (32, 32, 3)))

    def shapes(v, x):
      out = reps.capture_representations(model, v, x)
      return {k: r[0].shape for k, r in out.items()}

    shaped = {}

    def run(v, x):
      shaped.update(shapes(v, x))
      return jnp.zeros(())

    jax.eval_shape(run, variables,
                   jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
    return list(shaped.items())

  # (layer, (N, positions at stride 1, d = kh*kw*cin))
  assert captured(models.get_model('allcnn', 10)) == [
      ('conv1/conv', (1, 1024, 27)), ('conv2/conv', (1, 1024, 864)),
      ('conv3/conv', (1, 1024, 864)), ('conv4/conv', (1, 256, 1728)),
      ('conv5/conv', (1, 256, 1728)), ('conv6/conv', (1, 256, 1728)),
      ('conv7/conv', (1, 64, 1728)), ('conv8/conv', (1, 64, 192)),
      ('fc', (1, 1, 192))]
  assert captured(models.get_model('small_vgg', 10)) == [
      ('conv1', (1, 1024, 27)), ('conv2', (1, 256, 1152)),
      ('conv3', (1, 64, 2304)), ('fc1', (1, 1, 8192)), ('fc2', (1, 1, 512))]


_random_variables = model_helpers.random_variables


def _pgu_steps(model, variables, retained, forget, labels, gamma, count=2):
  layer_spectra = pgu.spectra(reps.layer_covariances(model, variables,
                                                     retained))
  bases, _ = pgu.padded_bases(layer_spectra, gamma)
  state = parallel.replicate({'params': jax.device_get(variables['params']),
                              'trgp_scale': None})
  constants = parallel.replicate({
      'batch_stats': variables['batch_stats'], 'bases': bases,
      'learning_rate': np.float32(0.5), 'entropy_weight': np.float32(0.2),
      'epsilon': np.float32(0.05), 'trgp_learning_rate_scale': np.float32(0.1)})
  batch = parallel.shard_batch({'image': forget, 'label': labels,
                                'mask': np.ones(len(labels), np.float32)})
  step = pgu.jitted_pgu_step(model, None)
  for _ in range(count):
    state, _ = step(state, batch, constants)
  return list(layer_spectra), jax.device_get(state['params'])


@pytest.mark.parametrize('name,kwargs,layers', [
    ('allcnn', dict(filters_percentage=0.125),
     [f'conv{i}/conv' for i in range(1, 9)] + ['fc']),
    ('small_vgg', dict(width=4), ['conv1', 'conv2', 'conv3', 'fc1', 'fc2']),
])
def test_pgu_steps_on_paper_models(name, kwargs, layers):
  """Representations and projected steps on a narrow copy (3 classes, 16x16
  images): every conv/linear kernel is a PGU layer; with a partial CGS
  every kernel moves and biases / BatchNorm stay; with the full CGS
  (gamma = 1) nothing moves."""
  model = models.get_model(name, 3, **kwargs)
  variables = _random_variables(model, (16, 16, 3))
  rng = np.random.default_rng(0)
  retained = rng.normal(size=(8, 16, 16, 3)).astype(np.float32)
  forget = rng.normal(size=(4, 16, 16, 3)).astype(np.float32)
  labels = np.array([0, 1, 2, 0], np.int32)
  found, moved = _pgu_steps(model, variables, retained, forget, labels, 0.5)
  assert found == layers
  before, after = _flat(variables['params']), _flat(moved)
  assert set(before) == set(after)
  for key, value in before.items():
    if key.endswith('kernel'):
      assert not np.allclose(after[key], value), key
    else:
      np.testing.assert_array_equal(after[key], value, err_msg=key)
  _, kept = _pgu_steps(model, variables, retained, forget, labels, 1.0,
                       count=1)
  for key, value in _flat(kept).items():
    np.testing.assert_allclose(value, before[key], atol=1e-6, err_msg=key)


# --- ViT AugReg .npz --------------------------------------------------------

SMALL = dict(patch_size=4, hidden_size=16, depth=2, num_heads=2, mlp_dim=32)


def _augreg_names(depth):
  """This library's ViT parameter path -> the published AugReg npz key,
  written out from the vit_jax layout (independent of the loader)."""
  names = {
      'embedding/kernel': 'embedding/kernel',
      'embedding/bias': 'embedding/bias',
      'cls': 'cls',
      'pos_embedding': 'Transformer/posembed_input/pos_embedding',
      'encoder_norm/scale': 'Transformer/encoder_norm/scale',
      'encoder_norm/bias': 'Transformer/encoder_norm/bias',
      'head/kernel': 'head/kernel',
      'head/bias': 'head/bias',
  }
  for i in range(depth):
    ours, theirs = f'encoderblock_{i}', f'Transformer/encoderblock_{i}'
    for leaf in ('scale', 'bias'):
      names[f'{ours}/LayerNorm_0/{leaf}'] = f'{theirs}/LayerNorm_0/{leaf}'
      names[f'{ours}/LayerNorm_1/{leaf}'] = f'{theirs}/LayerNorm_2/{leaf}'
    for proj in ('query', 'key', 'value', 'out'):
      for leaf in ('kernel', 'bias'):
        names[f'{ours}/MultiHeadDotProductAttention_0/{proj}/{leaf}'] = (
            f'{theirs}/MultiHeadDotProductAttention_1/{proj}/{leaf}')
    for dense in ('Dense_0', 'Dense_1'):
      for leaf in ('kernel', 'bias'):
        names[f'{ours}/MlpBlock_0/{dense}/{leaf}'] = (
            f'{theirs}/MlpBlock_3/{dense}/{leaf}')
  return names


def _write_augreg(path, depth=2, image=16, classes=7, pre_logits=True,
                  drop=(), reshape=None):
  """An AugReg-layout npz for a SMALL ViT (pretraining head of `classes`),
  every array random so that a stub loader cannot match it. Returns
  {npz key: array}."""
  model = ViT(num_classes=classes, **{**SMALL, 'depth': depth})
  shapes = jax.eval_shape(lambda: models.init_variables(
      model, jax.random.key(0), (image, image, 3)))
  names = _augreg_names(depth)
  flat = _flat(shapes['params'])
  assert set(flat) == set(names)  # the written dict covers the model
  rng = np.random.default_rng(42)
  arrays = {names[k]: rng.normal(size=v.shape).astype(np.float32)
            for k, v in flat.items()}
  if pre_logits:
    arrays['pre_logits/kernel'] = rng.normal(size=(16, 16)).astype(np.float32)
    arrays['pre_logits/bias'] = np.zeros(16, np.float32)
  for key in drop:
    del arrays[key]
  if reshape:
    key, shape = reshape
    arrays[key] = np.zeros(shape, np.float32)
  np.savez(path, **arrays)
  return arrays


def test_vit_b16_names_and_shapes_are_the_published_b16():
  """vit_b16 at 224x224 maps onto exactly the AugReg B/16 keys (head
  aside), with B/16's shapes (shapes only, nothing computed)."""
  model = models.get_model('vit_b16', 10)
  flat = _flat(jax.eval_shape(lambda: models.init_variables(
      model, jax.random.key(0), (224, 224, 3)))['params'])
  names = _augreg_names(12)
  assert set(flat) == set(names)
  assert all(augreg_key(k) == v for k, v in names.items())
  published = {
      'embedding/kernel': (16, 16, 3, 768), 'cls': (1, 1, 768),
      'Transformer/posembed_input/pos_embedding': (1, 197, 768),
      'Transformer/encoderblock_11/MultiHeadDotProductAttention_1/query/'
      'kernel': (768, 12, 64),
      'Transformer/encoderblock_11/MultiHeadDotProductAttention_1/out/'
      'kernel': (12, 64, 768),
      'Transformer/encoderblock_11/MlpBlock_3/Dense_0/kernel': (768, 3072),
      'Transformer/encoder_norm/scale': (768,)}
  inverse = {v: k for k, v in names.items()}
  for key, shape in published.items():
    assert flat[inverse[key]].shape == shape, key
  assert _count(flat) == 85_806_346  # 85,798,656 + a 10-class head


@pytest.fixture(scope='module')
def npz(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('augreg') / 'vit.npz')
  return path, _write_augreg(path)


def _load(path, image=(16, 16, 3), classes=5, **kwargs):
  return models.pretrained_variables(
      'vit_tiny', path, classes, image, jax.random.key(3),
      **{**SMALL, **kwargs})


def test_vit_npz_loads_every_pretrained_weight_and_a_fresh_head(npz):
  path, arrays = npz
  variables = _load(path)
  assert variables['batch_stats'] == {}
  flat = _flat(variables['params'])
  names = _augreg_names(2)
  model = models.get_model('vit_tiny', 5, **SMALL)
  fresh = _flat(jax.eval_shape(lambda: models.init_variables(
      model, jax.random.key(3), (16, 16, 3)))['params'])
  assert {k: v.shape for k, v in flat.items()} == {
      k: v.shape for k, v in fresh.items()}
  assert all(v.dtype == np.float32 for v in flat.values())
  for ours, theirs in names.items():
    if ours.startswith('head/'):
      continue
    np.testing.assert_array_equal(flat[ours], arrays[theirs], err_msg=ours)
  # The head: the model's zero init for 5 classes, not the 7-class one.
  assert flat['head/kernel'].shape == (16, 5)
  assert flat['head/bias'].shape == (5,)
  assert not np.any(flat['head/kernel']) and not np.any(flat['head/bias'])
  # head_zeroinit=False: a LeCun-normal head drawn from the key.
  random_head = _flat(_load(path, head_zeroinit=False)['params'])
  kernel = random_head['head/kernel']
  assert np.all(kernel != 0) and 0.05 < kernel.std() < 0.6  # 1/sqrt(16)
  np.testing.assert_array_equal(
      kernel, _flat(_load(path, head_zeroinit=False)['params'])['head/kernel'])
  np.testing.assert_array_equal(random_head['embedding/kernel'],
                                arrays['embedding/kernel'])


def test_vit_npz_resizes_the_position_embedding(npz):
  path, arrays = npz
  written = arrays['Transformer/posembed_input/pos_embedding']  # (1, 17, 16)
  grid = written[0, 1:].reshape(4, 4, 16)
  for image, (gh, gw) in (((24, 24, 3), (6, 6)), ((16, 24, 3), (4, 6)),
                          ((8, 8, 3), (2, 2))):
    posemb = _flat(_load(path, image=image)['params'])['pos_embedding']
    assert posemb.shape == (1, 1 + gh * gw, 16)
    np.testing.assert_array_equal(posemb[0, 0], written[0, 0])  # class token
    new = posemb[0, 1:].reshape(gh, gw, 16)
    want = scipy.ndimage.zoom(grid, (gh / 4, gw / 4, 1), order=1)
    np.testing.assert_allclose(new, want, rtol=1e-6, atol=1e-6)
    if gh >= 4:  # linear zoom keeps the corners
      np.testing.assert_allclose(new[0, 0], grid[0, 0], atol=1e-6)
      np.testing.assert_allclose(new[-1, -1], grid[-1, -1], atol=1e-6)
  # Same grid: untouched.
  same = _flat(_load(path)['params'])['pos_embedding']
  np.testing.assert_array_equal(same, written)


def test_vit_npz_errors_name_the_key(npz, tmp_path):
  with pytest.raises(ConfigError, match='do not exist'):
    _load(str(tmp_path / 'absent.npz'))
  missing = str(tmp_path / 'missing.npz')
  key = 'Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel'
  _write_augreg(missing, drop=(key,))
  with pytest.raises(ConfigError, match=key) as e:
    _load(missing)
  assert 'missing' in str(e.value) and '(16, 32)' in str(e.value)
  wrong = str(tmp_path / 'wrong.npz')
  _write_augreg(wrong, reshape=('embedding/kernel', (4, 4, 3, 8)))
  with pytest.raises(ConfigError, match='embedding/kernel') as e:
    _load(wrong)
  assert '(4, 4, 3, 8)' in str(e.value) and '(4, 4, 3, 16)' in str(e.value)
  with pytest.raises(ConfigError, match='embedding/kernel'):
    _load(npz[0], image=(16, 16, 1))  # 1-channel model, RGB checkpoint
  deeper = str(tmp_path / 'deeper.npz')
  _write_augreg(deeper, depth=3)
  with pytest.raises(ConfigError, match='encoderblock_2'):
    _load(deeper)
  with pytest.raises(ConfigError, match='encoderblock_3/'):
    _load(deeper, depth=4)  # the file is shallower than the model
  with pytest.raises(ConfigError, match="'cls'"):
    _load(npz[0], pool='gap')  # no class token in a 'gap' model
  not_npz = tmp_path / 'junk.npz'
  not_npz.write_bytes(b'not a zip')
  with pytest.raises(ConfigError, match='readable'):
    _load(str(not_npz))
  with pytest.raises(ConfigError, match='no pretrained-weights loader'):
    models.pretrained_variables('allcnn', missing, 10, (32, 32, 3),
                                jax.random.key(0))


def test_potion_starts_from_the_npz(npz, tmp_path):
  path, arrays = npz
  config = ml_collections.ConfigDict({
      'model': 'vit_tiny', 'model_kwargs': SMALL,
      'pretrain': {'steps': 600, 'npz_path': path}})
  images = np.zeros((4, 16, 16, 3), np.float32)
  clean = Split(images, np.arange(4) % 3, 3)
  model = models.get_model('vit_tiny', 3, **SMALL)
  initial = potion._pretrained(config, str(tmp_path), model, clean, 0)
  flat = _flat(initial['params'])
  assert flat['head/kernel'].shape == (16, 3)
  np.testing.assert_array_equal(
      flat['encoderblock_1/MlpBlock_0/Dense_1/kernel'],
      arrays['Transformer/encoderblock_1/MlpBlock_3/Dense_1/kernel'])
  assert not os.listdir(tmp_path)  # nothing pretrained
  # An empty npz_path leaves the setting's pretrain identity as it was.
  config.pretrain.npz_path = ''
  assert 'npz_path' not in potion._pretrain_setting(config)
  config.pretrain.npz_path = path
  assert potion._pretrain_setting(config)['npz_path'] == path
