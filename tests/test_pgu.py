"""PGU (Hoang et al. §3): representation cache, CGS, projection, loss, method;
pairwise label flips (§4.5)."""

import dataclasses

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unlearnjax import forget as forget_lib
from unlearnjax import models
from unlearnjax import parallel
from unlearnjax import representations as reps
from unlearnjax import training
from unlearnjax.data.split import Split
from unlearnjax.manipulations import label_flip
from unlearnjax.unlearn import pgu
import model_helpers
from unlearnjax.unlearn.base import UnlearnTask


def _init(model, seed, image_shape):
  return model_helpers.random_variables(model, image_shape, seed)


class ConvThenDense(nn.Module):
  """Strided, padded conv -> relu -> flatten -> dense (no normalisation)."""

  @nn.compact
  def __call__(self, x, train):
    x = nn.Conv(3, (3, 2), strides=(2, 1), padding=((1, 1), (0, 1)))(x)
    x = nn.relu(x).reshape(x.shape[0], -1)
    return nn.Dense(4)(x)


def _hand_conv_rows(x, kernel_size, strides, padding):
  """im2col by loops: rows in the kernel's (kh, kw, cin) order."""
  (kh, kw), (sh, sw) = kernel_size, strides
  x = np.pad(x, ((0, 0), *padding, (0, 0)))
  n, h, w, _ = x.shape
  rows = []
  for i in range(n):
    for top in range(0, h - kh + 1, sh):
      for left in range(0, w - kw + 1, sw):
        rows.append(x[i, top:top + kh, left:left + kw, :].reshape(-1))
  return np.array(rows, np.float64)


@pytest.mark.parametrize('patch_stride,strides', [('unit', (1, 1)),
                                                  ('layer', (2, 1))])
def test_layer_covariances_match_a_hand_loop(patch_stride, strides):
  """Conv patches at every stride-1 position ('unit', the default: the
  authors' `F.unfold(..., stride=1)`) or at the layer's strides ('layer');
  the dense layer's inputs are the conv's real (strided) output either way."""
  model = ConvThenDense()
  images = np.random.default_rng(0).normal(size=(5, 6, 5, 2)).astype(
      np.float32)
  variables = _init(model, 0, (6, 5, 2))
  out = reps.layer_covariances(model, variables, images, chunk_size=4,
                               patch_stride=patch_stride)
  assert list(out) == ['Conv_0', 'Dense_0']  # call order

  patches = _hand_conv_rows(images, (3, 2), strides, ((1, 1), (0, 1)))
  np.testing.assert_allclose(out['Conv_0'], patches.T @ patches, rtol=1e-5,
                             atol=1e-5)
  conv = variables['params']['Conv_0']
  patches = _hand_conv_rows(images, (3, 2), (2, 1), ((1, 1), (0, 1)))
  hidden = patches @ np.asarray(conv['kernel'], np.float64).reshape(12, 3)
  hidden = np.maximum(hidden + np.asarray(conv['bias']), 0.0)
  hidden = hidden.reshape(5, -1)  # per image: positions then channels
  np.testing.assert_allclose(out['Dense_0'], hidden.T @ hidden, rtol=1e-5,
                             atol=1e-5)


@pytest.mark.parametrize('name,kwargs', [('small_cnn', {'width': 4}),
                                         ('resnet9', {'width': 4}),
                                         ('vit_tiny', {})])
def test_representations_times_kernel_give_each_layer_output(name, kwargs):
  """R^l · K^l (+ bias) is the layer's output for every conv, dense and
  attention projection: rows, kernel and padding line up (conv patches at
  the layer's strides; the default stride-1 patches are a superset)."""
  model = models.get_model(name, 10, **kwargs)
  variables = _init(model, 1, (8, 8, 1))
  images = jax.random.normal(jax.random.key(2), (2, 8, 8, 1))

  @jax.jit
  def layer_inputs_and_outputs(variables, images):
    seen = {}

    def interceptor(next_fn, args, kwargs, context):
      out = next_fn(*args, **kwargs)
      if (context.method_name == '__call__'
          and isinstance(context.module, reps.CAPTURED_MODULES)):
        seen[reps.layer_name(context.module)] = (
            reps.representations(context.module, args[0], 'layer'), out)
      return out

    with nn.intercept_methods(interceptor):
      model.apply(variables, images, train=False)
    return seen

  seen = jax.device_get(layer_inputs_and_outputs(variables, images))
  assert set(seen) == set(reps.layer_dims(model, variables, (8, 8, 1)))
  flat = flax.traverse_util.flatten_dict(variables['params'], sep='/')
  for layer, (rows, output) in seen.items():
    kernel = flat[f'{layer}/kernel']
    got = rows @ kernel.reshape(rows.shape[-1], -1)
    if f'{layer}/bias' in flat:
      got = got + flat[f'{layer}/bias'].reshape(-1)
    np.testing.assert_allclose(got.reshape(output.shape), output, rtol=1e-4,
                               atol=1e-4, err_msg=layer)


def test_removal_equals_recomputation_without_the_removed_rows(digits,
                                                              tiny_model):
  train, _, _ = digits
  variables = _init(tiny_model, 0, train.image_shape)
  images = train.images[:48]
  removed = np.array([3, 7, 8, 20, 41])
  kept = np.setdiff1d(np.arange(48), removed)
  full = reps.layer_covariances(tiny_model, variables, images, chunk_size=16)
  incremental = reps.remove(full, reps.layer_covariances(
      tiny_model, variables, images[removed], chunk_size=16))
  scratch = reps.layer_covariances(tiny_model, variables, images[kept],
                                   chunk_size=16)
  for layer, rrt in scratch.items():
    np.testing.assert_allclose(incremental[layer], rrt, rtol=1e-5,
                               atol=1e-5 * np.abs(rrt).max(), err_msg=layer)
  with pytest.raises(ValueError, match='different layers'):
    reps.remove(full, {'Conv_0': full['Conv_0']})


def test_core_space_rule_by_hand():
  basis = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))[0]
  sigma = np.array([4.0, 3.0, 2.0, 1.0])  # Σσ = 10; Σσ² = 30
  rrt = basis @ np.diag(sigma**2) @ basis.T
  # Cumulative shares C_k of σ: 0.4, 0.7, 0.9, 1.0 (singular values, not
  # squared: at γ = 0.8 the squared shares 16/30, 25/30 would cut at 2).
  # k per rule: count_at_most (unlearn.py, the default), count_below
  # (depoisoning.py), count_at_most_plus_one (unlearn_class.py),
  # first_reaching (§3.2.2 as printed). The rules differ at ties C_k = γ.
  table = {0.0: (0, 0, 1, 0), 0.4: (1, 0, 2, 1), 0.7: (2, 1, 3, 2),
           0.71: (2, 2, 3, 3), 0.8: (2, 2, 3, 3), 0.95: (3, 3, 4, 4),
           1.0: (4, 3, 4, 4)}
  for gamma, ks in table.items():
    for rule, k in zip(reps.CORE_DIMENSION_RULES, ks):
      m = reps.core_gradient_space(rrt, gamma, rule)
      assert m.shape == (4, k), (gamma, rule)
      np.testing.assert_allclose(np.abs(m.T @ basis[:, :k]), np.eye(k),
                                 atol=1e-8)
  assert reps.core_gradient_space(rrt, 0.8).shape == (4, 2)  # count_at_most
  # The removal can leave tiny negative eigenvalues: they count as 0.
  sigma_out, _ = reps.singular_values(np.diag([1.0, -1e-12]))
  np.testing.assert_array_equal(sigma_out, [1.0, 0.0])
  for rule in reps.CORE_DIMENSION_RULES:
    assert reps.core_gradient_space(np.zeros((3, 3)), 0.9, rule).shape == (
        3, 0)
  with pytest.raises(ValueError, match='energy_threshold'):
    reps.core_gradient_space(rrt, 1.5)
  with pytest.raises(ValueError, match='core_dimension_rule'):
    reps.core_gradient_space(rrt, 0.9, 'energy')


def test_project_removes_the_core_components_and_freezes_the_rest():
  rng = np.random.default_rng(0)
  grads = {'Conv_0': {'kernel': rng.normal(size=(3, 3, 2, 5)),
                      'bias': rng.normal(size=5)},
           'BatchNorm_0': {'scale': rng.normal(size=5)}}
  grads = jax.tree.map(lambda g: g.astype(np.float32), grads)
  m = np.linalg.qr(rng.normal(size=(18, 4)))[0]
  out = reps.project(grads, {'Conv_0': m})
  g = grads['Conv_0']['kernel'].reshape(18, 5)
  np.testing.assert_allclose(out['Conv_0']['kernel'].reshape(18, 5),
                             g - m @ m.T @ g, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(m.T @ np.asarray(out['Conv_0']['kernel']).reshape(
      18, 5), 0.0, atol=1e-5)
  assert not np.any(out['Conv_0']['bias'])
  assert not np.any(out['BatchNorm_0']['scale'])
  with pytest.raises(ValueError, match='no kernel'):
    reps.project(grads, {'Dense_0': m})


def test_pgu_loss_by_hand():
  logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], np.float32)
  labels = np.array([0, 1])
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  entropy = -(p * np.log(p)).sum(-1)
  for weight, eps in [(0.2, 0.05), (-0.2, 0.1)]:
    want = -np.log(1 - p[[0, 1], labels] + eps) - weight * entropy
    got = pgu.example_losses(jnp.asarray(logits), jnp.asarray(labels), weight,
                             eps)
    np.testing.assert_allclose(got, want, rtol=1e-5)
  # 'non_label' (depoisoning.py): the entropy without the label's logit.
  rest = [np.delete(row, y) for row, y in zip(logits, labels)]
  q = [np.exp(r) / np.exp(r).sum() for r in rest]
  want = np.array([-(x * np.log(x)).sum() for x in q])
  got = pgu.output_entropy(jnp.asarray(logits), jnp.asarray(labels),
                           'non_label')
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_trgp_kernel_and_mode_defaults():
  rng = np.random.default_rng(0)
  kernel = rng.normal(size=(6, 3)).astype(np.float32)
  basis = np.zeros((6, 6), np.float32)  # k = 2, zero-padded to d columns
  basis[:, :2] = np.linalg.qr(rng.normal(size=(6, 2)))[0]
  identity = np.eye(6, dtype=np.float32)
  np.testing.assert_allclose(pgu.trgp_kernel(kernel, basis, identity),
                             kernel, atol=1e-6)
  scale = np.eye(6, dtype=np.float32)
  scale[:2, :2] = [[2.0, 0.5], [0.0, 1.0]]
  m = basis[:, :2]
  want = kernel + m @ (scale[:2, :2] - np.eye(2)) @ m.T @ kernel
  np.testing.assert_allclose(pgu.trgp_kernel(kernel, basis, scale), want,
                             rtol=1e-5, atol=1e-6)
  forget, depoison = (pgu.PGUHparams().resolved(),
                      pgu.PGUDepoisonHparams().resolved())
  assert forget.entropy_weight > 0 > depoison.entropy_weight
  assert pgu.PGUHparams(entropy_weight=0.0).resolved().entropy_weight == 0.0
  with pytest.raises(ValueError, match='energy_threshold'):
    pgu.PGUHparams(energy_threshold=1.2).resolved()


def _correct_rows(model, variables, split, n):
  predicted = training.predict(model, variables, split.images)
  return np.flatnonzero(predicted == split.labels)[:n]


def _projected_steps(model, variables, layer_spectra, gamma, images, labels,
                     count=5, learning_rate=0.5):
  """`count` PGU steps (forget mode) on one batch; the new params. The CGS
  by the paper's k (`first_reaching`), which at γ = 0.999 spans every
  retained direction here."""
  bases, _ = pgu.padded_bases(layer_spectra, gamma, 'first_reaching')
  # A host copy: the jitted step donates its state.
  state = parallel.replicate({'params': jax.device_get(variables['params']),
                              'trgp_scale': None})
  constants = parallel.replicate({
      'batch_stats': variables.get('batch_stats', {}), 'bases': bases,
      'learning_rate': np.float32(learning_rate),
      'entropy_weight': np.float32(0.2), 'epsilon': np.float32(0.05),
      'trgp_learning_rate_scale': np.float32(0.1)})
  batch = parallel.shard_batch({'image': images, 'label': labels,
                                'mask': np.ones(len(labels), np.float32)})
  step = pgu.jitted_pgu_step(model, None)
  for _ in range(count):
    state, _ = step(state, batch, constants)
  return jax.device_get(state['params'])


def test_projected_steps_leave_retained_outputs_unchanged():
  """PGU eq. 5: updates orthogonal to the retained CGS keep W r = W_o r.

  Retained images have channel 1 at zero, so their conv patches and (with
  fewer retained images than dense inputs) their dense inputs span strict
  subspaces; the forget images do not, so the projected update is not zero.
  """
  model = ConvThenDense()
  rng = np.random.default_rng(0)
  retained = rng.normal(size=(12, 6, 5, 2)).astype(np.float32)
  retained[..., 1] = 0.0
  forget = rng.normal(size=(4, 6, 5, 2)).astype(np.float32)
  labels = rng.integers(0, 4, 4).astype(np.int32)
  variables = _init(model, 3, (6, 5, 2))
  layer_spectra = pgu.spectra(reps.layer_covariances(model, variables,
                                                     retained))

  def logit_change(params, images):
    new = {'params': params, 'batch_stats': {}}
    return np.abs(training.predict_logits(model, new, images)
                  - training.predict_logits(model, variables, images)).max()

  tight = _projected_steps(model, variables, layer_spectra, 0.999, forget,
                           labels)
  scale = np.abs(training.predict_logits(model, variables, retained)).max()
  assert logit_change(tight, retained) <= 1e-5 * scale
  assert logit_change(tight, forget) > 1e-2 * scale
  for layer in ('Conv_0', 'Dense_0'):  # both layers moved
    assert not np.allclose(tight[layer]['kernel'],
                           variables['params'][layer]['kernel'])
  loose = _projected_steps(model, variables, layer_spectra, 0.5, forget,
                           labels)
  assert logit_change(loose, retained) > 1e-2 * scale


def make_task(trained, tiny_model, tiny_recipe, forget):
  manipulation, validation, variables = trained
  train = manipulation.train
  return UnlearnTask(model=tiny_model, original=variables, train=train,
                     forget=forget,
                     retain=forget_lib.retain_indices(len(train), forget),
                     validation=validation, recipe=tiny_recipe)


def test_pgu_forgets_and_touches_only_kernels(trained, tiny_model,
                                              tiny_recipe):
  manipulation, _, variables = trained
  forget = _correct_rows(tiny_model, variables, manipulation.train, 24)
  task = make_task(trained, tiny_model, tiny_recipe, forget)
  hparams = pgu.PGUHparams(energy_threshold=0.9, learning_rate=1.0,
                           final_learning_rate=0.5, max_epochs=30)
  out = pgu.unlearn(task, hparams, jax.random.key(0))
  before = training.predict(tiny_model, variables, task.forget_split.images)
  after = training.predict(tiny_model, out.variables,
                           task.forget_split.images)
  assert np.any(before != after)
  assert out.info['pgu_forget_accuracy'] < 1.0
  assert out.info['pgu_steps'] > 0
  assert set(out.info['pgu_core_dims']) == {'Conv_0', 'Conv_1', 'Conv_2',
                                            'Dense_0'}
  flat_new = jax.tree_util.tree_flatten_with_path(out.variables)[0]
  flat_old = dict(jax.tree_util.tree_flatten_with_path(variables)[0])
  for path, value in flat_new:
    same = np.array_equal(np.asarray(value), np.asarray(flat_old[path]))
    assert same != ('kernel' in jax.tree_util.keystr(path)), path
  # The training-set cache is computed once per original model.
  assert sum(k.startswith('pgu/rrt/') for k in task.cache) == 1
  budget = pgu.unlearn(task, dataclasses.replace(
      hparams, budget_fraction=0.05, patience=100), jax.random.key(0))
  assert budget.info['pgu_steps'] == 3  # round(0.05 · 60)
  assert budget.info['pgu_stop_reason'] in ('step_budget',
                                            'forget_at_target')
  assert sum(k.startswith('pgu/rrt/') for k in task.cache) == 1


def test_pgu_depoison_runs_trgp_on_the_last_layer(trained, tiny_model,
                                                  tiny_recipe):
  manipulation = trained[0]
  task = make_task(trained, tiny_model, tiny_recipe,
                   manipulation.manipulated[:16])
  out = pgu.unlearn(task, pgu.PGUDepoisonHparams(max_epochs=4),
                    jax.random.key(0))
  assert out.info['pgu_trgp_layer'] == 'Dense_0'
  assert out.info['pgu_mode'] == 'depoison'
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(out.variables))
  np.testing.assert_array_equal(out.variables['params']['Dense_0']['bias'],
                                task.original['params']['Dense_0']['bias'])
  with pytest.raises(ValueError, match='mode'):
    pgu.unlearn(task, pgu.PGUHparams(mode='both'), jax.random.key(0))


def test_incremental_requests_update_the_cache(trained, tiny_model):
  manipulation, validation, variables = trained
  train = manipulation.train.subset(np.arange(200))
  state = pgu.start_incremental(tiny_model, variables, train.images)
  hparams = pgu.PGUHparams(max_epochs=2)
  first, second = train.subset(np.arange(8)), train.subset(np.arange(8, 16))
  state1, out1 = pgu.unlearn_request(tiny_model, state, first, validation,
                                     hparams, jax.random.key(0))
  state2, _ = pgu.unlearn_request(tiny_model, state1, second, validation,
                                  hparams, jax.random.key(1))
  assert state2.requests == 2
  want = reps.remove(reps.remove(state.retain_rrt, reps.layer_covariances(
      tiny_model, variables, first.images)), reps.layer_covariances(
          tiny_model, out1.variables, second.images))
  for layer, rrt in want.items():
    np.testing.assert_allclose(state2.retain_rrt[layer], rrt, rtol=1e-6,
                               atol=1e-6 * np.abs(rrt).max())


# --- pairwise label flips (PGU §4.5) --------------------------------------


def _tiny_split(num_classes=10, per_class=12, seed=0):
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(num_classes), per_class)
  return Split(rng.normal(size=(labels.size, 4, 4, 1)), labels, num_classes)


def test_label_flip_flips_exactly_the_budget_between_the_pairs():
  train, test = _tiny_split(), _tiny_split(seed=1)
  out = label_flip.manipulate(train, test, seed=0, num_flips=18,
                              class_pairs=((1, 7), (4, 9)))
  assert out.manipulated.size == 18
  changed = np.flatnonzero(out.train.labels != train.labels)
  np.testing.assert_array_equal(changed, out.manipulated)
  partner = {1: 7, 7: 1, 4: 9, 9: 4}
  for row in out.manipulated:
    assert out.train.labels[row] == partner[train.labels[row]]
  np.testing.assert_array_equal(out.manipulated_clean_labels,
                                train.labels[out.manipulated])
  counts = np.bincount(train.labels[out.manipulated], minlength=10)
  assert sorted(counts[[1, 7, 4, 9]]) == [4, 4, 5, 5]  # 18 over 4 classes
  assert set(np.unique(out.affected.labels)) == {1, 4, 7, 9}
  assert not set(np.unique(out.unaffected.labels)) & {1, 4, 7, 9}
  assert len(out.affected) + len(out.unaffected) == len(test)
  by_fraction = label_flip.manipulate(train, test, seed=0, flip_fraction=0.25)
  assert by_fraction.manipulated.size == 4 * 3  # 25% of 12, four classes


def test_label_flip_is_deterministic_per_seed():
  train, test = _tiny_split(), _tiny_split(seed=1)
  a = label_flip.manipulate(train, test, seed=3, num_flips=10)
  b = label_flip.manipulate(train, test, seed=3, num_flips=10)
  c = label_flip.manipulate(train, test, seed=4, num_flips=10)
  np.testing.assert_array_equal(a.manipulated, b.manipulated)
  assert not np.array_equal(a.manipulated, c.manipulated)
  r1 = label_flip.manipulate(train, test, seed=5, class_pairs='random')
  r2 = label_flip.manipulate(train, test, seed=5, class_pairs='random')
  assert r1.info['class_pairs'] == r2.info['class_pairs']
  assert sorted(c for p in r1.info['class_pairs'] for c in p) == list(
      range(10))
  assert len(r1.unaffected) == 0


@pytest.mark.parametrize('kwargs,match', [
    (dict(class_pairs=((1, 1),)), 'itself'),
    (dict(class_pairs=((1, 7), (7, 9))), 'more than one pair'),
    (dict(class_pairs=((1, 10),)), 'outside'),
    (dict(class_pairs=()), 'empty'),
    (dict(class_pairs='cats'), 'random'),
    (dict(num_flips=-1), 'num_flips'),
    (dict(num_flips=100), 'fewer training samples'),
    (dict(flip_fraction=0.0), 'flip_fraction'),
    (dict(flip_fraction=0.01), 'flips no sample'),
])
def test_label_flip_rejects_bad_input(kwargs, match):
  train, test = _tiny_split(), _tiny_split(seed=1)
  with pytest.raises(ValueError, match=match):
    label_flip.manipulate(train, test, seed=0, **kwargs)


def test_forget_target_chance_forgets_further_than_validation(
    trained, tiny_model, tiny_recipe):
  """Removing a whole class: with the 'validation' target PGU stops as soon
  as the forget accuracy reaches the validation accuracy; 'chance' (1/C,
  §3.2.3) keeps going towards 1/C over the same steps."""
  manipulation = trained[0]
  forget = np.flatnonzero(manipulation.train.labels == 0)
  task = make_task(trained, tiny_model, tiny_recipe, forget)
  hparams = pgu.PGUHparams(energy_threshold=0.9, batch_size=32, max_epochs=6,
                           patience=100)
  runs = {target: pgu.unlearn(task, dataclasses.replace(
      hparams, forget_target=target), jax.random.key(0))
          for target in ('validation', 'chance')}
  assert runs['chance'].info['pgu_forget_target'] == 'chance'
  assert runs['chance'].info['pgu_steps'] >= runs['validation'].info[
      'pgu_steps']
  assert (runs['chance'].info['pgu_forget_accuracy']
          <= runs['validation'].info['pgu_forget_accuracy'])
  with pytest.raises(ValueError, match='forget_target'):
    dataclasses.replace(hparams, forget_target='zero').resolved()
