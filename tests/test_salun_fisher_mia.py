"""SalUn, Fisher forgetting and the membership / entropy metrics."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from unlearnjax import grads as grads_lib
from unlearnjax.metrics import mia
from unlearnjax.unlearn import fisher_forgetting as ff
from unlearnjax.unlearn import salun
from test_methods import make_task


@pytest.fixture(scope='module')
def task(trained, tiny_model, tiny_recipe):
  return make_task(trained, tiny_model, tiny_recipe)


# ----------------------------------------------------------------------------
# SalUn
# ----------------------------------------------------------------------------


def test_saliency_mask_keeps_the_top_share_by_magnitude():
  gradient = {'a': np.array([[0.1, -3.0], [2.0, 0.0]]),
              'b': np.array([-1.0, 0.5, 4.0])}
  # 7 entries, ⌊0.5 · 7⌋ = 3: |4.0|, |-3.0|, |2.0|.
  mask = salun.saliency_mask(gradient, 0.5)
  np.testing.assert_array_equal(mask['a'], [[False, True], [True, False]])
  np.testing.assert_array_equal(mask['b'], [False, False, True])
  # ⌊0.6 · 7⌋ = 4 adds |-1.0|; all of them at 1.0.
  np.testing.assert_array_equal(salun.saliency_mask(gradient, 0.6)['b'],
                                [True, False, True])
  assert sum(m.sum() for m in salun.saliency_mask(gradient, 1.0).values()) == 7
  # Ties go to the earlier leaf / position (stable, `jax.tree.leaves` order).
  tied = salun.saliency_mask({'a': np.ones(2), 'b': -np.ones(2)}, 0.75)
  np.testing.assert_array_equal(tied['a'], [True, True])
  np.testing.assert_array_equal(tied['b'], [True, False])
  for bad in (0.0, -0.1, 1.5):
    with pytest.raises(ValueError, match='saliency_fraction'):
      salun.saliency_mask(gradient, bad)
  with pytest.raises(ValueError, match='NaN'):
    salun.saliency_mask({'a': np.array([np.nan, 1.0])}, 0.5)


def test_keep_masked_freezes_exactly_and_random_labels_are_wrong():
  params = {'w': jnp.array([1.0, 2.0, 3.0])}
  mask = {'w': np.array([True, False, True])}
  tx = optax.chain(optax.add_decayed_weights(0.1), optax.sgd(0.5, 0.9),
                   salun.keep_masked(mask))
  state = tx.init(params)
  for _ in range(3):
    updates, state = tx.update({'w': jnp.array([1.0, jnp.inf, -1.0])}, state,
                               params)
    params = optax.apply_updates(params, updates)
  assert float(params['w'][1]) == 2.0
  assert float(params['w'][0]) != 1.0 and float(params['w'][2]) != 3.0
  with pytest.raises(ValueError):
    salun.keep_masked(None).init(params)

  labels = np.arange(1000) % 10
  new = salun.random_labels(labels, 10, np.random.default_rng(0))
  assert not np.any(new == labels) and set(np.unique(new)) == set(range(10))
  anything = salun.random_labels(labels, 10, np.random.default_rng(0),
                                 wrong_only=False)
  assert np.any(anything == labels)


def test_salun_trains_only_the_salient_weights(task):
  hparams = salun.SalUnHparams()
  assert hparams.saliency_fraction == 0.5
  out = salun.unlearn(task, hparams, jax.random.key(0))
  mask = salun.saliency_mask(salun.forget_gradient(task), 0.5)
  total = sum(m.size for m in jax.tree.leaves(mask))
  assert out.info == {'salient_parameters': total // 2, 'parameters': total}
  moved = 0
  for new, old, keep in zip(jax.tree.leaves(out.variables['params']),
                            jax.tree.leaves(task.original['params']),
                            jax.tree.leaves(mask)):
    new, old = np.asarray(new), np.asarray(old)
    np.testing.assert_array_equal(new[~keep], old[~keep])   # exactly M_o's
    moved += int(np.sum(new[keep] != old[keep]))
  assert moved > 0.9 * (total // 2)
  again = salun.unlearn(task, hparams, jax.random.key(0))
  for a, b in zip(jax.tree.leaves(out.variables),
                  jax.tree.leaves(again.variables)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # The forget-weighted objective runs too, and moves the same weights only.
  weighted = salun.unlearn(task, dataclasses.replace(hparams,
                                                     forget_weight=0.5),
                           jax.random.key(1))
  for new, old, keep in zip(jax.tree.leaves(weighted.variables['params']),
                            jax.tree.leaves(task.original['params']),
                            jax.tree.leaves(mask)):
    np.testing.assert_array_equal(np.asarray(new)[~keep],
                                  np.asarray(old)[~keep])
  with pytest.raises(ValueError, match='forget_weight'):
    salun.unlearn(task, dataclasses.replace(hparams, forget_weight=1.5),
                  jax.random.key(0))


def test_forget_gradient_is_the_mean_loss_gradient(task):
  split = task.forget_split
  loss = grads_lib.example_cross_entropy(task.model,
                                         task.original['batch_stats'])
  expected = jax.jit(jax.grad(lambda p: jnp.mean(jax.vmap(
      loss, in_axes=(None, 0, 0))(p, split.images, split.labels))))(
          task.original['params'])
  got = salun.forget_gradient(task)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4,
                               atol=1e-6)


# ----------------------------------------------------------------------------
# Fisher forgetting
# ----------------------------------------------------------------------------


def test_noise_variance_by_hand():
  fisher = {
      'Conv_0': {'kernel': np.array([[[[1.0, 0.0], [3.0, 1e-4]]]])},  # 1x1x2x2
      'BatchNorm_0': {'scale': np.array([0.5, 0.0])},
      'Dense_0': {'kernel': np.array([[1.0, 0.001], [0.0, 4.0]]),
                  'bias': np.array([0.25, 0.0])},
  }
  alpha = 1e-6
  v = ff.noise_variance(fisher, alpha, 'Dense_0')
  inv = lambda f, cap: min(1.0 / (f + 1e-8), cap)
  # Conv kernel (kh, kw, in, out): mean over `in` (torch mean(dim=1)).
  out0 = alpha * (inv(1.0, 1e3) + inv(3.0, 1e3)) / 2
  out1 = alpha * (inv(0.0, 1e3) + inv(1e-4, 1e3)) / 2
  np.testing.assert_allclose(v['Conv_0']['kernel'],
                             [[[[out0, out1], [out0, out1]]]], rtol=1e-6)
  # 1-D leaves: × 10.
  np.testing.assert_allclose(v['BatchNorm_0']['scale'],
                             [10 * alpha * 2.0, 10 * alpha * 1e3], rtol=1e-6)
  # Output layer: cap 1e2, × 10 (kernel: Golatkar's "Last layer" branch).
  k0 = 10 * alpha * (inv(1.0, 1e2) + inv(0.0, 1e2)) / 2
  k1 = 10 * alpha * (inv(0.001, 1e2) + inv(4.0, 1e2)) / 2
  np.testing.assert_allclose(v['Dense_0']['kernel'], [[k0, k1], [k0, k1]],
                             rtol=1e-6)
  np.testing.assert_allclose(v['Dense_0']['bias'],
                             [10 * alpha * 4.0, 10 * alpha * 1e2], rtol=1e-6)
  # Foster's copy: no extra factor on the output kernel.
  foster = ff.noise_variance(fisher, alpha, 'Dense_0', output_layer_scale=1.0)
  np.testing.assert_allclose(foster['Dense_0']['kernel'],
                             [[k0 / 10, k1 / 10]] * 2, rtol=1e-6)
  assert all(np.all(x == 0) for x in
             jax.tree.leaves(ff.noise_variance(fisher, 0.0, 'Dense_0')))
  with pytest.raises(ValueError, match='noise_scale'):
    ff.noise_variance(fisher, -1.0, 'Dense_0')
  with pytest.raises(ValueError, match='output_layer'):
    ff.noise_variance(fisher, alpha, 'Dense_9')
  with pytest.raises(ValueError, match='non-negative'):
    ff.noise_variance({'Dense_0': {'bias': np.array([-1.0])}}, alpha,
                      'Dense_0')


def test_add_noise_is_deterministic_per_key_with_the_given_variance():
  params = {'a': {'w': jnp.zeros((4000,))}, 'b': {'w': jnp.ones((2, 3))}}
  variance = {'a': {'w': np.full((4000,), 0.25, np.float32)},
              'b': {'w': np.zeros((2, 3), np.float32)}}
  x = ff.add_noise(params, variance, jax.random.key(0))
  y = ff.add_noise(params, variance, jax.random.key(0))
  z = ff.add_noise(params, variance, jax.random.key(1))
  np.testing.assert_array_equal(np.asarray(x['a']['w']),
                                np.asarray(y['a']['w']))
  assert not np.array_equal(np.asarray(x['a']['w']), np.asarray(z['a']['w']))
  np.testing.assert_array_equal(np.asarray(x['b']['w']), np.ones((2, 3)))
  assert abs(float(np.std(np.asarray(x['a']['w']))) - 0.5) < 0.03


def test_true_fisher_matches_a_loop_over_classes(task):
  images = task.train.images[task.retain[:2]]
  fn = jax.jit(ff._true_fisher_fn(task.model))
  got = fn(task.original, jnp.asarray(images), jnp.zeros(2, jnp.int32))
  grad_fn = jax.jit(jax.grad(grads_lib.example_cross_entropy(
      task.model, task.original['batch_stats'])))
  logits = task.model.apply(task.original, images, train=False)
  probs = np.asarray(jax.nn.softmax(logits))
  for i in range(2):
    expected = None
    for c in range(probs.shape[1]):
      g = grad_fn(task.original['params'], images[i], jnp.int32(c))
      term = jax.tree.map(lambda t, c=c: probs[i, c] * np.square(t), g)
      expected = term if expected is None else jax.tree.map(np.add, expected,
                                                            term)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
      np.testing.assert_allclose(np.asarray(a)[i], b, rtol=1e-4, atol=1e-8)


def test_fisher_forgetting_on_the_tiny_model(task):
  # 256 retain rows keep the per-sample Fisher quick.
  task = dataclasses.replace(task, retain=task.retain[:256])
  assert ff.output_layer_name(task) == 'Dense_0'
  zero = ff.unlearn(task, ff.FisherForgettingHparams(noise_scale=0.0),
                    jax.random.key(0))
  for a, b in zip(jax.tree.leaves(zero), jax.tree.leaves(task.original)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  hparams = ff.FisherForgettingHparams()
  a = ff.unlearn(task, hparams, jax.random.key(1))
  b = ff.unlearn(task, hparams, jax.random.key(1))
  c = ff.unlearn(task, hparams, jax.random.key(2))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert any(not np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a['params']),
                             jax.tree.leaves(c['params'])))
  assert a['batch_stats'] is task.original['batch_stats']
  with pytest.raises(ValueError, match='fisher_kind'):
    ff.unlearn(task, ff.FisherForgettingHparams(fisher_kind='hessian'),
               jax.random.key(0))


# ----------------------------------------------------------------------------
# AUC, ROC, entropy, attacks
# ----------------------------------------------------------------------------


def test_auc_equals_a_brute_force_pair_count():
  rng = np.random.default_rng(0)
  pos = rng.integers(0, 6, 37).astype(float)   # many ties
  neg = rng.integers(0, 5, 23).astype(float)
  brute = np.mean([1.0 if p > n else 0.5 if p == n else 0.0
                   for p in pos for n in neg])
  assert mia.auc(pos, neg) == pytest.approx(brute, abs=1e-12)
  fpr, tpr, thresholds = mia.roc_curve(pos, neg)
  assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
  assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
  assert np.trapezoid(tpr, fpr) == pytest.approx(brute, abs=1e-12)
  assert np.isinf(thresholds[0])
  assert mia.auc([2.0, 3.0], [0.0, 1.0]) == 1.0
  assert mia.auc([0.0, 1.0], [2.0, 3.0]) == 0.0
  same = rng.normal(size=(2, 4000))
  assert abs(mia.auc(same[0], same[1]) - 0.5) < 0.03
  for bad in (([], [1.0]), ([1.0], []), ([np.nan], [1.0])):
    with pytest.raises(ValueError):
      mia.auc(*bad)


def test_output_entropy_by_hand():
  logits = np.array([[0.0, 0.0, 0.0, 0.0],
                     [np.log(2.0), 0.0, -np.inf, -np.inf],
                     [100.0, 0.0, 0.0, 0.0]], np.float32)
  h = np.asarray(mia.output_entropy(logits[:2, :]))
  np.testing.assert_allclose(h[0], np.log(4.0), rtol=1e-6)
  third = np.array([2 / 3, 1 / 3])
  np.testing.assert_allclose(h[1], -np.sum(third * np.log(third)), rtol=1e-6)
  assert float(mia.output_entropy(logits[2:])[0]) < 1e-6
  counts, edges = mia.entropy_histogram(logits[[0, 0, 2]], bins=4)
  np.testing.assert_allclose(edges, np.linspace(0, np.log(4.0), 5), rtol=1e-6)
  np.testing.assert_array_equal(counts, [1, 0, 0, 2])
  counts, edges = mia.entropy_histogram(logits[[0, 2]], bins=3,
                                        log_entropy=True)
  assert counts.sum() == 2 and edges[-1] == pytest.approx(np.log(np.log(4)))
  with pytest.raises(ValueError, match=r'\(N, C\)'):
    mia.output_entropy(np.zeros(4))


def test_logistic_attack_separates_clear_features_and_matches_sklearn():
  rng = np.random.default_rng(0)
  members = rng.normal([2.0, -1.0], 0.5, size=(300, 2))
  others = rng.normal([-2.0, 1.0], 0.5, size=(200, 2))
  attack = mia.fit_logistic_attack(members, others)
  assert attack.accuracy(members, others) > 0.98
  # scikit-learn is a dependency (the embedded digits come with it).
  from sklearn import linear_model  # pylint: disable=g-import-not-at-top
  reference = linear_model.LogisticRegression(class_weight='balanced', tol=1e-10,
                                         max_iter=10000).fit(
      np.concatenate([members, others]),
      np.r_[np.ones(300), np.zeros(200)])
  np.testing.assert_allclose(attack.coef, reference.coef_[0], rtol=1e-4)
  assert attack.intercept == pytest.approx(reference.intercept_[0], rel=1e-4)
  with pytest.raises(ValueError, match='columns'):
    mia.fit_logistic_attack(members, others[:, :1])
  with pytest.raises(ValueError, match='members'):
    mia.fit_logistic_attack(members, np.zeros((0, 2)))


def _logits(rng, n, sharpness):
  """Synthetic logits: class 0 ahead by `sharpness` (confidence)."""
  logits = rng.normal(0.0, 0.5, size=(n, 10))
  logits[:, 0] += sharpness * (1 + 0.2 * rng.normal(size=n))
  return logits.astype(np.float32)


def test_retain_test_attack_reads_confidence():
  rng = np.random.default_rng(1)
  retain, test = _logits(rng, 400, 8.0), _logits(rng, 300, 1.0)
  remembered = mia.retain_test_attack(retain, test, _logits(rng, 50, 8.0))
  assert remembered.mia > 0.95 and remembered.forget_auc > 0.95
  assert remembered.attack_accuracy > 0.95 and remembered.attack_auc > 0.95
  forgotten = mia.retain_test_attack(retain, test, _logits(rng, 50, 1.0))
  assert forgotten.mia < 0.1 and abs(forgotten.forget_auc - 0.5) < 0.15
  labels = np.zeros(400, np.int64)
  both = mia.retain_test_attack(
      retain, test, retain[:10], retain_labels=labels,
      test_labels=labels[:300], forget_labels=labels[:10],
      features=('entropy', 'loss'))
  assert both.attack.coef.shape == (2,)
  with pytest.raises(ValueError, match='labels'):
    mia.retain_test_attack(retain, test, retain, features=('loss',))
  with pytest.raises(ValueError, match='features'):
    mia.retain_test_attack(retain, test, retain, features=('margin',))


def test_output_attack_with_and_without_models():
  rng = np.random.default_rng(2)
  with_forget = [_logits(rng, 100, 6.0) for _ in range(4)]
  without = [_logits(rng, 100, 2.0) for _ in range(4)]
  attack = mia.fit_output_attack(with_forget, without)
  original = mia.output_attack_roc(attack, _logits(rng, 100, 6.0),
                                   [_logits(rng, 100, 2.0)])
  assert original.auc > 0.95
  assert np.trapezoid(original.tpr, original.fpr) == pytest.approx(
      original.auc, abs=1e-9)
  unlearned = mia.output_attack_roc(attack, _logits(rng, 100, 2.0),
                                    np.stack(without[:2]))
  assert abs(unlearned.auc - 0.5) < 0.1
  probs = mia.output_features(np.array([[0.0, 2.0, 1.0]]), log_scale=False)
  assert np.all(np.diff(probs[0]) <= 0)
  np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-6)
  np.testing.assert_allclose(
      mia.output_features(np.array([[0.0, 2.0, 1.0]])), np.log(probs),
      rtol=1e-6)
  linear = mia.fit_output_attack(with_forget, without, log_scale=False)
  assert not linear.log_scale and linear.classifier.coef.shape == (10,)
  with pytest.raises(ValueError, match='no models'):
    mia.fit_output_attack([], without)


def test_fisher_forgetting_grid_spans_the_default_noise_scale():
  from unlearnjax.unlearn import fisher_forgetting, get_method  # pylint: disable=g-import-not-at-top
  grid = get_method('fisher_forgetting').grid(None)
  scales = [h.noise_scale for h in grid]
  assert fisher_forgetting.FisherForgettingHparams().noise_scale in scales
  assert scales == sorted(scales) and len(set(scales)) == len(scales)
