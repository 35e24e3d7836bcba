"""Issue 10: work shared across a sweep, and small calls on XLA:CPU.

* I_{D_r} from the one S_tr pass (exact estimator) equals a direct pass
  over D_r, and is computed once for every found fraction;
* the per-batch estimate summed over calls of a few rows equals one call
  per batch (the gradient of a sum is the sum of the gradients);
* the rows-per-call rule follows the model's FLOPs, never a timing.
"""

import dataclasses

import jax
import numpy as np
import pytest

from unlearnjax import forget as forget_lib
from unlearnjax import importance, tuning
from unlearnjax.unlearn import UnlearnTask, ptn, ssd
from unlearnjax.unlearn import importances as importances_lib
from conftest import tree_allclose


def _task(trained, tiny_model, tiny_recipe, fraction, cache=None):
  manipulation, validation, variables = trained
  forget = forget_lib.sample_forget(manipulation.manipulated, fraction, 0)
  return UnlearnTask(
      model=tiny_model, original=variables, train=manipulation.train,
      forget=forget,
      retain=forget_lib.retain_indices(len(manipulation.train), forget),
      validation=validation, recipe=tiny_recipe,
      cache={} if cache is None else cache)


def _direct(task, name, estimator='exact', batch_size=64):
  split = task.retain_split
  return importance.parameter_importance(
      task.model, task.original, split.images, split.labels,
      importance=name, estimator=estimator, batch_size=batch_size)


@pytest.mark.parametrize('name', ['fisher', 'xlf'])
def test_retain_importance_from_the_training_pass_equals_a_direct_pass(
    name, trained, tiny_model, tiny_recipe):
  task = _task(trained, tiny_model, tiny_recipe, 0.5)
  derived, forget = importances_lib.task_importances(
      task, importance=name, estimator='exact', batch_size=64, data='retain')
  assert derived.shared and not forget.shared
  direct = _direct(task, name)
  # float32 sums in another order; relative to each leaf's scale.
  for d, e in zip(jax.tree.leaves(derived.value), jax.tree.leaves(direct)):
    scale = float(np.max(np.abs(e))) or 1.0
    np.testing.assert_allclose(np.asarray(d), np.asarray(e), rtol=1e-4,
                               atol=1e-5 * scale)
  assert all(np.all(np.asarray(x) >= 0) for x in jax.tree.leaves(derived.value))


def test_one_training_pass_serves_every_found_fraction(trained, tiny_model,
                                                       tiny_recipe,
                                                       monkeypatch):
  passes = []
  original = importance.parameter_importance

  def counting(model, variables, images, labels, **kwargs):
    passes.append(images.shape[0])
    return original(model, variables, images, labels, **kwargs)

  monkeypatch.setattr(importance, 'parameter_importance', counting)
  cache = {}
  hparams = ssd.SSDHparams(estimator='exact')
  n_train = len(trained[0].train)
  spent = []
  for fraction in (0.2, 0.5, 1.0):
    task = _task(trained, tiny_model, tiny_recipe, fraction, cache)
    ssd.importances(task, hparams)
    (_, seconds), _ = ptn.importances(task, dataclasses.replace(
        ptn.PTNHparams(importance='fisher'), estimator='exact'))
    spent.append(seconds)
  # One pass over S_tr, then one per forget set; never one over D_r.
  assert passes.count(n_train) == 1
  assert len(passes) == 1 + 3
  assert all(s > 0 for s in spent)  # the cost of the value, also on a hit


def test_derived_retain_importance_falls_back_when_retain_is_not_the_rest(
    trained, tiny_model, tiny_recipe):
  task = _task(trained, tiny_model, tiny_recipe, 0.5)
  task = dataclasses.replace(task, retain=task.retain[:-3], cache={})
  derived, _ = importances_lib.task_importances(
      task, importance='fisher', estimator='exact', batch_size=64,
      data='retain')
  assert not derived.shared
  tree_allclose(derived.value, _direct(task, 'fisher'), rtol=1e-6, atol=0)


def test_retain_from_train_is_the_weighted_difference():
  rng = np.random.default_rng(0)
  per_sample = rng.random((10, 3, 2)).astype(np.float32)
  forget = [1, 4, 7]
  retain = [i for i in range(10) if i not in forget]
  out = importance.retain_from_train(
      {'w': per_sample.mean(0)}, 10, {'w': per_sample[forget].mean(0)}, 3)
  np.testing.assert_allclose(out['w'], per_sample[retain].mean(0), rtol=1e-6)
  with pytest.raises(ValueError, match='no retain rows'):
    importance.retain_from_train({'w': 1.0}, 3, {'w': 1.0}, 3)


@pytest.mark.parametrize('rows', [1, 4, 64])
def test_per_batch_in_small_calls_equals_one_call_per_batch(
    rows, trained, tiny_model, tiny_recipe, monkeypatch):
  task = _task(trained, tiny_model, tiny_recipe, 0.5)
  split = task.train
  kwargs = dict(importance='xlf', estimator='per_batch', batch_size=48,
                shuffle_key=jax.random.key(3))
  monkeypatch.setattr(tuning, 'batch_gradient_rows',
                      lambda model, variables, shape, batch: batch)
  whole = importance.parameter_importance(
      tiny_model, task.original, split.images, split.labels, **kwargs)
  monkeypatch.setattr(tuning, 'batch_gradient_rows',
                      lambda model, variables, shape, batch: min(rows, batch))
  small = importance.parameter_importance(
      tiny_model, task.original, split.images, split.labels, **kwargs)
  tree_allclose(small, whole, rtol=2e-5, atol=1e-7)


def test_rows_per_call_follow_the_models_flops(tiny_model, trained):
  variables = trained[2]
  shape = trained[0].train.image_shape
  flops = tuning.forward_flops(tiny_model, variables, shape)
  assert flops > 0
  assert flops == tuning.forward_flops(tiny_model, variables, shape)
  rows = tuning.batch_gradient_rows(tiny_model, variables, shape, 4096)
  chunk = tuning.per_sample_rows(tiny_model, variables, shape)
  assert rows & (rows - 1) == 0 and chunk & (chunk - 1) == 0  # powers of 2
  assert tuning.CPU_MIN_BATCH_ROWS <= rows <= tuning.MAX_ROWS
  assert tuning.CPU_MIN_PER_SAMPLE_ROWS <= chunk <= tuning.ACCELERATOR_CHUNK
  assert tuning.batch_gradient_rows(tiny_model, variables, shape, 3) == 3
  # The rule: the largest power of two of rows within the FLOP budget.
  assert rows == min(max(tuning._power_of_two_at_most(
      tuning.CPU_BATCH_GRAD_FLOPS / flops), tuning.CPU_MIN_BATCH_ROWS),
                     tuning.MAX_ROWS)
  assert [tuning._power_of_two_at_most(x) for x in (0.3, 1, 5, 64, 100)] == \
      [1, 1, 4, 64, 64]


def test_ptn_default_candidates_per_call_is_the_tuning_rule_and_picks_the_same(
    trained, tiny_model, tiny_recipe):
  task = _task(trained, tiny_model, tiny_recipe, 0.5)
  shape = task.train.image_shape
  expected = tuning.search_candidates(tiny_model, task.original, shape)
  assert 1 <= expected <= tuning.MAX_SEARCH_CANDIDATES
  auto = ptn.unlearn(task, ptn.PTNHparams(), jax.random.key(0))
  one = ptn.unlearn(task, ptn.PTNHparams(vectorised=False),
                    jax.random.key(0))
  assert auto.info['ptn_candidates_per_call'] == expected
  assert one.info['ptn_candidates_per_call'] == 1
  assert auto.info['ptn_tries'] == one.info['ptn_tries']
  tree_allclose(auto.variables, one.variables, rtol=0, atol=0)
  with pytest.raises(ValueError, match='candidates_per_call >= 0'):
    ptn.PTNHparams(candidates_per_call=-1)
