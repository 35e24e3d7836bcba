"""The budgeted baselines of Pawelczyk et al. A.2: GD, NGD, GA, EU-k, CF-k,
NegGrad+. Budgets of 3 steps (0.05 × the tiny recipe's 60) keep this quick."""

import dataclasses

import jax
import numpy as np
import pytest

from unlearnjax import training
from unlearnjax.unlearn import get_method
from unlearnjax.unlearn import budgeted, cf_k, eu_k, gd, gradient_ascent
from unlearnjax.unlearn import neggrad_plus, ngd
from conftest import tree_allclose
from test_methods import make_task, poisoned_forget_rows

BUDGETED = ('gd', 'ngd', 'gradient_ascent', 'eu_k', 'cf_k', 'neggrad_plus')
RETAIN_ONLY = ('gd', 'ngd', 'eu_k', 'cf_k')


@pytest.fixture(scope='module')
def task(trained, tiny_model, tiny_recipe):
  return make_task(trained, tiny_model, tiny_recipe)


def forget_loss(task, variables):
  logits = training.predict_logits(task.model, variables,
                                   task.train.images[task.forget])
  return float(training.cross_entropy(logits, task.train.labels[task.forget]))


def assert_trees_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def trees_differ(a, b):
  return any(not np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize('name', RETAIN_ONLY)
def test_retain_only_methods_never_see_a_forget_index(name, task):
  task = dataclasses.replace(task, train=poisoned_forget_rows(task))
  method = get_method(name)
  out = method.unlearn(task, method.hparams(), jax.random.key(0))
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(out))
  assert trees_differ(out['params'], task.original['params'])


@pytest.mark.parametrize('name', BUDGETED)
def test_steps_equal_the_budget_and_runs_are_deterministic(name, task,
                                                           monkeypatch):
  calls = []
  run_steps = training.run_steps

  def counting(step_fn, state, make_batch, steps, **kw):
    def counted(*args):
      calls.append(1)
      return step_fn(*args)
    return run_steps(counted, state, make_batch, steps, **kw)

  monkeypatch.setattr(training, 'run_steps', counting)
  method = get_method(name)
  hparams = method.hparams()
  assert hparams.budget_fraction == 0.05
  out = method.unlearn(task, hparams, jax.random.key(1))
  assert len(calls) == max(1, round(0.05 * task.recipe.steps)) == 3
  again = method.unlearn(task, hparams, jax.random.key(1))
  assert_trees_equal(out, again)
  other = method.unlearn(task, hparams, jax.random.key(2))
  assert trees_differ(out['params'], other['params'])


def test_ngd_without_noise_is_gd_and_noise_changes_it(task):
  key = jax.random.key(3)
  reference = gd.unlearn(task, gd.GDHparams(), key)
  silent = ngd.unlearn(task, ngd.NGDHparams(noise_std=0.0), key)
  assert_trees_equal(silent, reference)  # same batches, same arithmetic
  noisy = ngd.unlearn(task, ngd.NGDHparams(noise_std=1e-2), key)
  assert trees_differ(noisy['params'], reference['params'])
  tree_allclose(noisy['params'], reference['params'], atol=0.1)  # small noise


def test_gradient_ascent_raises_the_forget_loss(task):
  before = forget_loss(task, task.original)
  out = gradient_ascent.unlearn(
      task, gradient_ascent.GradientAscentHparams(learning_rate_scale=1.0),
      jax.random.key(0))
  assert forget_loss(task, out) > before + 0.1


def test_neggrad_plus_with_full_retain_weight_retraces_gd(task):
  key = jax.random.key(4)
  reference = gd.unlearn(task, gd.GDHparams(), key)
  out = neggrad_plus.unlearn(
      task, neggrad_plus.NegGradPlusHparams(retain_weight=1.0), key)
  # Same retain batches, zero weight on the forget batch: GD's parameters
  # (BatchNorm statistics also saw the forget batch).
  assert_trees_equal(out['params'], reference['params'])


def test_neggrad_plus_keeps_the_forget_loss_below_gradient_ascent(task):
  hparams = dict(learning_rate_scale=1.0)
  ascent = gradient_ascent.unlearn(
      task, gradient_ascent.GradientAscentHparams(**hparams), jax.random.key(0))
  plus = neggrad_plus.unlearn(
      task, neggrad_plus.NegGradPlusHparams(retain_weight=0.5, **hparams),
      jax.random.key(0))
  assert forget_loss(task, plus) < forget_loss(task, ascent)


def _only_dense_changed(task, out):
  params, original = out['params'], task.original['params']
  assert set(params) == set(original)
  for name in original:
    if name != 'Dense_0':
      assert_trees_equal(params[name], original[name])
  assert_trees_equal(out['batch_stats'], task.original['batch_stats'])
  assert trees_differ(params['Dense_0'], original['Dense_0'])


def test_eu_k_reinitialises_and_trains_only_the_last_layer(task):
  out = eu_k.unlearn(task, eu_k.EUkHparams(), jax.random.key(5))
  _only_dense_changed(task, out)
  # With a zero learning rate the last layer is the fresh initialisation.
  frozen = eu_k.unlearn(task, eu_k.EUkHparams(learning_rate_scale=0.0),
                        jax.random.key(5))
  init_key, _ = budgeted.fit_keys(jax.random.key(5))
  fresh = budgeted.fresh_variables(task.model, init_key,
                                   task.train.image_shape)
  assert_trees_equal(frozen['params']['Dense_0'], fresh['params']['Dense_0'])
  assert trees_differ(out['params']['Dense_0'], fresh['params']['Dense_0'])


def test_cf_k_trains_only_the_last_layer(task):
  out = cf_k.unlearn(task, cf_k.CFkHparams(), jax.random.key(5))
  _only_dense_changed(task, out)
  # From M_o, not re-initialised: close to the original last layer.
  tree_allclose(out['params']['Dense_0'], task.original['params']['Dense_0'],
                atol=0.1)


def test_layers_are_counted_in_definition_order(task):
  fresh = budgeted.fresh_variables(task.model, jax.random.key(0),
                                   task.train.image_shape)
  assert budgeted.last_modules(fresh, 3) == ('Conv_2', 'BatchNorm_2',
                                             'Dense_0')
  with pytest.raises(ValueError, match='top-level layers'):
    budgeted.last_modules(fresh, 8)


def test_eu_k_with_a_batchnorm_layer_resets_its_statistics(task):
  out = eu_k.unlearn(task, eu_k.EUkHparams(num_trainable_layers=2),
                     jax.random.key(6))
  original = task.original
  for name in ('Conv_0', 'Conv_1', 'Conv_2', 'BatchNorm_0', 'BatchNorm_1'):
    assert_trees_equal(out['params'][name], original['params'][name])
  for name in ('BatchNorm_0', 'BatchNorm_1'):
    assert_trees_equal(out['batch_stats'][name], original['batch_stats'][name])
  # BatchNorm_2 restarted from mean 0 / var 1 and trained: not M_o's.
  assert trees_differ(out['batch_stats']['BatchNorm_2'],
                      original['batch_stats']['BatchNorm_2'])


@pytest.mark.parametrize('name,size', [('ngd', 2), ('gradient_ascent', 2),
                                       ('eu_k', 3), ('cf_k', 3),
                                       ('gd', 1), ('neggrad_plus', 1)])
def test_grids(name, size, task):
  grid = get_method(name).grid(task)
  assert len(grid) == size
  assert all(h.budget_fraction == 0.05 for h in grid)
