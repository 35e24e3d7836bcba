"""RELOAD (Alg. 1), its remedial baselines GAR and GRDA, the cross-pattern
shortcut and RELOAD's §4.2 metrics."""

import dataclasses
import math

import jax
import numpy as np
import pytest

from unlearnjax import forget as forget_lib
from unlearnjax import training
from unlearnjax.data.split import Split
from unlearnjax.manipulations import cross_pattern
from unlearnjax.metrics import reload as metrics
from unlearnjax.unlearn import gar, grda, reload
from unlearnjax.unlearn.base import UnlearnTask
from conftest import tree_allclose


def make_task(trained, model, recipe, *, corrected_from=None, **changes):
  manipulation, validation, variables = trained
  forget = forget_lib.sample_forget(manipulation.manipulated, 0.5, 0)
  corrected = None
  if corrected_from is not None:  # the clean digits: remedial learning
    corrected = Split(
        corrected_from.images[forget],
        manipulation.manipulated_clean_labels[
            np.searchsorted(manipulation.manipulated, forget)],
        10, corrected_from.ids[forget])
  task = UnlearnTask(
      model=model, original=variables, train=manipulation.train,
      forget=forget,
      retain=forget_lib.retain_indices(len(manipulation.train), forget),
      validation=validation, recipe=recipe, corrected=corrected)
  return dataclasses.replace(task, **changes) if changes else task


@pytest.fixture(scope='module')
def task(trained, tiny_model, tiny_recipe):
  return make_task(trained, tiny_model, tiny_recipe)


def trees_differ(a, b):
  return any(not np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# ------------------------------------------------------------ pure pieces


def test_knowledge_values_by_hand():
  g_data = {'a': np.array([1.0, -2.0, 0.0, 4.0]), 'b': {'w': np.array([[0.5]])}}
  g_new = {'a': np.array([1.0, 2.0, 0.0, 1.0]), 'b': {'w': np.array([[0.25]])}}
  eps = 1e-3
  kv = reload.knowledge_values(g_data, g_new, eps)
  np.testing.assert_allclose(
      kv['a'], [eps / (1 + eps), (4 + eps) / (2 + eps), 1.0, (3 + eps) / (4 + eps)],
      rtol=1e-6)
  np.testing.assert_allclose(kv['b']['w'], [[(0.25 + eps) / (0.5 + eps)]],
                             rtol=1e-6)


def test_reset_lowest_resets_exactly_the_lowest_share():
  rng = np.random.default_rng(0)
  knowledge = {'conv': rng.permutation(12).reshape(3, 4).astype(np.float32),
               'dense': np.array([12.5, -1.0, 30.0], np.float32)}
  params = jax.tree.map(lambda k: np.full(k.shape, 7.0, np.float32), knowledge)
  fresh = jax.tree.map(lambda k: 100 + np.arange(k.size, dtype=np.float32)
                       .reshape(k.shape), knowledge)
  # 15 parameters; 0.2 → the 3 lowest KV: -1 (dense), 0 and 1 (conv).
  new, mask = reload.reset_lowest(params, knowledge, fresh, 0.2)
  expected = {'conv': knowledge['conv'] <= 1, 'dense': np.array([0, 1, 0], bool)}
  for name in knowledge:
    np.testing.assert_array_equal(mask[name], expected[name])
    np.testing.assert_array_equal(
        new[name], np.where(expected[name], fresh[name], params[name]))
  # Nothing for 0; ties are broken by position, so exactly round(α·n) reset.
  same, none = reload.reset_lowest(params, knowledge, fresh, 0.0)
  assert not any(m.any() for m in jax.tree.leaves(none))
  tree_allclose(same, params, rtol=0, atol=0)
  flat = jax.tree.map(np.zeros_like, knowledge)
  _, tied = reload.reset_lowest(params, flat, fresh, 0.5)
  assert sum(int(m.sum()) for m in jax.tree.leaves(tied)) == 8  # round(7.5)


def test_priming_step_by_hand():
  params = {'w': np.array([1.0, 2.0], np.float32)}
  g_data = {'w': np.array([0.5, -1.0], np.float32)}
  g_new = {'w': np.array([0.25, 1.0], np.float32)}
  primed = reload.priming_step(params, g_data, g_new, 0.1)
  np.testing.assert_allclose(primed['w'], [1.025, 1.8], rtol=1e-6)


def test_full_data_gradient_equals_a_plain_loop(digits, tiny_model):
  train, _, _ = digits
  variables = training.init_variables(tiny_model, jax.random.key(0),
                                      train.image_shape)
  rows = np.arange(3, 153)[::-1]  # 150 rows, not in order: 64, 64, 22
  got = reload.full_data_gradient(tiny_model, variables, train, rows,
                                  batch_size=64)

  def example_loss(params, image, label):
    logits = tiny_model.apply({'params': params,
                               'batch_stats': variables['batch_stats']},
                              image[None], train=False)
    return training.cross_entropy(logits, label[None])

  grad_fn = jax.jit(jax.grad(example_loss))   # one example: one compile
  expected = jax.tree.map(np.zeros_like, variables['params'])
  for start in range(0, rows.size, 64):
    take = rows[start:start + 64]
    for row in take:   # eval mode: the batch mean is the mean of examples
      g = grad_fn(variables['params'], train.images[row], train.labels[row])
      expected = jax.tree.map(
          lambda e, x, n=take.size: e + np.asarray(x) / n, expected, g)
  tree_allclose(got, expected, rtol=2e-5, atol=1e-6)


# ------------------------------------------------------------ RELOAD


def test_reload_without_fine_tuning_is_prime_then_reset(task):
  key = jax.random.key(3)
  hparams = reload.ReloadHparams(budget_fraction=0.0, priming_step_size=0.05,
                                 reset_fraction=0.1)
  task = dataclasses.replace(task, cache={})
  out = reload.unlearn(task, hparams, key)
  assert not out.info['data_gradient_cached']
  batch = task.recipe.batch_size
  g_data = reload.full_data_gradient(task.model, task.original, task.train,
                                     batch_size=batch)
  g_new = reload.full_data_gradient(task.model, task.original, task.train,
                                    task.retain, batch_size=batch)
  tree_allclose(reload.data_gradient(task), g_data, rtol=0, atol=0)  # cached
  primed = reload.priming_step(task.original['params'], g_data, g_new, 0.05)
  kv = reload.knowledge_values(g_data, g_new)
  reset_key, _ = jax.random.split(key)
  fresh = training.init_variables(task.model, reset_key,
                                  task.train.image_shape)['params']
  expected, mask = reload.reset_lowest(primed, kv, fresh, 0.1)
  tree_allclose(out.variables['params'], expected, rtol=0, atol=0)
  tree_allclose(out.variables['batch_stats'], task.original['batch_stats'],
                rtol=0, atol=0)
  n = sum(m.size for m in jax.tree.leaves(mask))
  assert out.info['num_reset'] == round(0.1 * n)
  assert out.info['fine_tune_steps'] == 0
  again = reload.unlearn(task, hparams, key)
  assert again.info['data_gradient_cached']
  tree_allclose(again.variables, out.variables, rtol=0, atol=0)


def test_reload_end_to_end(task, trained, digits, tiny_model, tiny_recipe):
  out = reload.unlearn(task, reload.ReloadHparams(), jax.random.key(0))
  variables = out.variables
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(variables))
  assert trees_differ(variables['params'], task.original['params'])
  assert out.info['fine_tune_steps'] == round(0.2 * task.recipe.steps)
  assert out.info['reset_fraction'] == pytest.approx(
      max(0.05, 0.9 * task.forget.size / len(task.train)))
  assert abs(out.info['reset_share'] - out.info['reset_fraction']) < 1e-3
  assert not out.info['remedial']
  # Still a classifier of the clean test set.
  _, _, test = digits
  assert training.accuracy(tiny_model, variables, test) > 0.5
  # Remedial learning: D_new also holds the clean versions of S_f.
  remedial = make_task(trained, tiny_model, tiny_recipe,
                       corrected_from=digits[0])
  data = reload.new_data(remedial)
  assert data.new_rows.size == len(remedial.train)
  np.testing.assert_array_equal(data.split.images[data.new_rows[-1]],
                                remedial.corrected.images[-1])
  fixed = reload.unlearn(remedial, reload.ReloadHparams(), jax.random.key(0))
  assert fixed.info['remedial']
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(fixed.variables))


@pytest.mark.parametrize('reset_fraction', [1.0, -0.1, 1.5])
def test_reset_fraction_outside_unit_interval_raises(task, reset_fraction):
  with pytest.raises(ValueError, match='reset_fraction'):
    reload.unlearn(task, reload.ReloadHparams(reset_fraction=reset_fraction),
                   jax.random.key(0))
  with pytest.raises(ValueError, match='reset_fraction'):
    reload.reset_lowest({'w': np.zeros(2)}, {'w': np.zeros(2)},
                        {'w': np.zeros(2)}, reset_fraction)


def test_empty_new_data_raises(task):
  everything = dataclasses.replace(task, forget=np.arange(len(task.train)),
                                   retain=np.zeros((0,), np.int64))
  for unlearn, hparams in ((reload.unlearn, reload.ReloadHparams()),
                           (gar.unlearn, gar.GARHparams()),
                           (grda.unlearn, grda.GRDAHparams())):
    with pytest.raises(ValueError, match='D_new is empty'):
      unlearn(everything, hparams, jax.random.key(0))


# ------------------------------------------------------------ GAR, GRDA


@pytest.fixture(scope='module')
def full_batch_task(digits, trained, tiny_model):
  """8 rows, 2 of them forgotten and corrected, batches of 8: every batch of
  D and of D_new is the whole set, so a step is a plain gradient step."""
  train, validation, _ = digits
  recipe = training.Recipe(steps=20, batch_size=8, learning_rate=0.1,
                           momentum=0.0, weight_decay=0.0)
  forget = np.array([0, 1])
  return UnlearnTask(
      model=tiny_model, original=trained[2], train=train.subset(np.arange(8)),
      forget=forget, retain=np.arange(2, 8), validation=validation,
      recipe=recipe, corrected=train.subset(np.array([8, 9])))


def _train_mode_loss(task, params, split):
  logits, _ = training.forward(task.model, params,
                               task.original['batch_stats'], split.images,
                               train=True)
  return training.cross_entropy(logits, split.labels)


def _second_step_rate(task, steps):
  # Step 0 of the warm-up has learning rate 0; step 1 is the first that moves.
  recipe = dataclasses.replace(task.recipe, steps=steps)
  return float(training.learning_rate_schedule(recipe)(1))


def test_grda_step_ascends_d_and_descends_d_new(full_batch_task):
  task = full_batch_task
  data = reload.new_data(task)
  new = data.split.subset(data.new_rows)
  hparams = grda.GRDAHparams(budget_fraction=0.1)   # 2 steps
  out = grda.unlearn(task, hparams, jax.random.key(0))
  rate = _second_step_rate(task, 2)
  assert rate > 0
  grads = jax.jit(jax.grad(lambda p: _train_mode_loss(task, p, new)
                           - _train_mode_loss(task, p, task.train)))(
                               task.original['params'])
  expected = jax.tree.map(lambda p, g: p - rate * g, task.original['params'],
                          grads)
  tree_allclose(out['params'], expected, rtol=1e-4, atol=1e-6)


def test_gar_phases_by_hand(full_batch_task):
  task = full_batch_task
  data = reload.new_data(task)
  new = data.split.subset(data.new_rows)
  rate = _second_step_rate(task, 2)
  params = task.original['params']
  # Ascent only (2 steps at the recipe's rate): θ + η·∇L(D).
  ascent = gar.unlearn(task, gar.GARHparams(
      budget_fraction=0.1, ascent_share=1.0, ascent_learning_rate_scale=1.0),
                       jax.random.key(0))
  grads = jax.jit(jax.grad(
      lambda p: _train_mode_loss(task, p, task.train)))(params)
  tree_allclose(ascent['params'],
                jax.tree.map(lambda p, g: p + rate * g, params, grads),
                rtol=1e-4, atol=1e-6)
  # Descent only: θ − η·∇L(D_new).
  descent = gar.unlearn(task, gar.GARHparams(budget_fraction=0.1,
                                             ascent_share=0.0),
                        jax.random.key(0))
  grads = jax.jit(jax.grad(lambda p: _train_mode_loss(task, p, new)))(params)
  tree_allclose(descent['params'],
                jax.tree.map(lambda p, g: p - rate * g, params, grads),
                rtol=1e-4, atol=1e-6)
  assert gar.phase_steps(task, gar.GARHparams()) == (1, 1)
  with pytest.raises(ValueError, match='ascent_share'):
    gar.unlearn(task, gar.GARHparams(ascent_share=1.5), jax.random.key(0))


def test_grda_unlearns_with_defaults(task):
  # Unlearning (no corrected rows): D_new is the retain set.
  out = grda.unlearn(task, grda.GRDAHparams(), jax.random.key(1))
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(out))
  assert trees_differ(out['params'], task.original['params'])


# ------------------------------------------------------------ cross pattern


def test_cross_pattern_changes_only_the_two_classes(digits):
  train, _, test = digits
  m = cross_pattern.manipulate(train, test, seed=0, shortcut_classes=(3, 5))
  changed = np.flatnonzero(
      np.any(m.train.images != train.images, axis=(1, 2, 3)))
  rows = np.flatnonzero(np.isin(train.labels, (3, 5)))
  np.testing.assert_array_equal(m.manipulated, rows)
  assert set(changed) <= set(rows) and changed.size > 0.9 * rows.size
  np.testing.assert_array_equal(m.train.labels, train.labels)   # labels kept
  np.testing.assert_array_equal(m.manipulated_clean_labels, train.labels[rows])
  np.testing.assert_array_equal(m.corrected_images, train.images[rows])
  # A cross on 8×8: the two diagonals of the bottom-right 3×3 corner.
  assert m.info['cross_size'] == 3 and cross_pattern.default_cross_size(32) == 5
  diff = (m.train.images - train.images)[rows].max(axis=0)[..., 0]
  np.testing.assert_array_equal(diff[-3:, -3:] > 0, cross_pattern.cross_mask(3))
  assert not diff[:5].any() and not diff[:, :5].any()
  # Corrected versions of a subset, in the order asked for.
  some = rows[[4, 1]]
  corrected = m.corrected(some)
  np.testing.assert_array_equal(corrected.images, train.images[some])
  np.testing.assert_array_equal(corrected.labels, train.labels[some])
  with pytest.raises(ValueError, match='not manipulated'):
    m.corrected(np.flatnonzero(~np.isin(train.labels, (3, 5)))[:1])
  # D_m: the other classes' test images, stamped, true labels.
  assert not np.isin(m.affected.labels, (3, 5)).any()
  others = np.flatnonzero(~np.isin(test.labels, (3, 5)))
  np.testing.assert_array_equal(m.affected.labels, test.labels[others])
  assert np.all(m.affected.images >= test.images[others])
  assert np.any(m.affected.images != test.images[others])
  np.testing.assert_array_equal(m.unaffected.images, test.images)
  assert len(m.triggered_test) == len(test)
  drawn = cross_pattern.manipulate(train, test, seed=1)
  assert len(drawn.info['shortcut_classes']) == 2
  with pytest.raises(ValueError, match='shortcut_classes'):
    cross_pattern.manipulate(train, test, seed=0, shortcut_classes=(3, 3))


# ------------------------------------------------------------ metrics


def test_metrics_on_hand_made_logits():
  a = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
  b = np.array([[0.0, 1.0, 0.0], [1.0, -1.0, 3.0]])
  assert metrics.symmetric_kl(a, a) == pytest.approx(0.0, abs=1e-12)
  assert metrics.symmetric_kl(a, b) == pytest.approx(metrics.symmetric_kl(b, a))
  p = np.exp(a) / np.exp(a).sum(-1, keepdims=True)
  q = np.exp(b) / np.exp(b).sum(-1, keepdims=True)
  by_hand = np.mean(np.sum(p * np.log(p / q) + q * np.log(q / p), -1))
  assert metrics.symmetric_kl(a, b) == pytest.approx(by_hand, rel=1e-9)
  labels = np.array([0, 2])
  assert metrics.new_accuracy(a, labels) == 0.5   # row 2: argmax 0 ≠ 2
  assert metrics.new_accuracy(b, labels) == 0.5   # row 1: argmax 1 ≠ 0
  assert metrics.forget_accuracy_gap(a, b, np.array([0, 0])) == 1.0
  ce = lambda x: -np.mean(np.log(np.exp(x) / np.exp(x).sum(-1, keepdims=True))
                          [np.arange(2), labels])
  assert metrics.forget_error_gap(a, b, labels) == pytest.approx(
      abs(ce(a) - ce(b)))
  assert metrics.cost(3.0, 12.0) == 0.25
  with pytest.raises(ValueError):
    metrics.cost(1.0, 0.0)
  assert math.isnan(metrics.symmetric_kl(np.zeros((0, 3)), np.zeros((0, 3))))


def test_reload_metrics_of_the_retrained_model_itself(task):
  variables = task.original
  got = metrics.reload_metrics(task.model, variables, variables, task,
                               seconds=1.0, retrain_seconds=4.0)
  assert got['delta_fa'] == 0 and got['delta_fe'] == 0
  assert got['nskl'] == pytest.approx(0, abs=1e-9)
  assert got['fskl'] == pytest.approx(0, abs=1e-9)
  assert got['cost'] == 0.25 and got['na'] == got['retrain_na']
  logits = training.predict_logits(task.model, variables,
                                   task.train.images[task.retain])
  assert got['na'] == pytest.approx(
      metrics.accuracy(logits, task.train.labels[task.retain]))
