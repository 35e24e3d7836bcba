"""The contract every registered method keeps (a new method is tested here
without editing this file), and Goel's selection over a grid."""

import dataclasses

import jax
import numpy as np
import pytest

from unlearnjax import forget as forget_lib
from unlearnjax import selection
from unlearnjax.unlearn import METHODS, UnlearnTask
from unlearnjax.unlearn.base import Method, Unlearned, as_unlearned

# Methods whose defaults may legitimately leave M_o as it is on a task:
# SSD dampens only parameters with I_f > τ·I_D (none may pass τ = 10); PGU
# stops early once its forget accuracy is at the target (§3.2.3), which M_o
# may already meet on a barely learned backdoor.
MAY_KEEP_ORIGINAL = {'ssd', 'ssd_exact', 'pgu'}


@pytest.fixture(scope='module')
def task(trained, tiny_model, tiny_recipe):
  manipulation, validation, variables = trained
  forget = forget_lib.sample_forget(manipulation.manipulated, 0.5, 0)
  # For methods that read corrected rows (remedial learning): S_f with the
  # labels it had before poisoning.
  position = np.searchsorted(manipulation.manipulated, forget)
  corrected = manipulation.train.subset(forget).replace(
      labels=manipulation.manipulated_clean_labels[position])
  return UnlearnTask(
      model=tiny_model, original=variables, train=manipulation.train,
      forget=forget,
      retain=forget_lib.retain_indices(len(manipulation.train), forget),
      validation=validation, recipe=tiny_recipe, corrected=corrected)


def _shapes(tree):
  return jax.tree.map(lambda x: (np.shape(x), np.asarray(x).dtype), tree)


@pytest.mark.parametrize('name', sorted(METHODS))
def test_registered_method_keeps_the_contract(name, task):
  method = METHODS[name]
  assert isinstance(method, Method) and method.name == name
  defaults = method.hparams()
  assert dataclasses.is_dataclass(defaults)
  assert method.hparams.__dataclass_params__.frozen, f'{name}: not frozen'
  grid = list(method.grid(task))
  assert grid, f'{name}: empty grid'
  assert all(isinstance(h, method.hparams) for h in grid)
  key = jax.random.key(7)
  first = as_unlearned(method.unlearn(task, defaults, key))
  second = as_unlearned(method.unlearn(task, defaults, key))
  assert isinstance(first, Unlearned)
  # Shaped like M_o: same collections, same leaves, same shapes and dtypes.
  assert _shapes(first.variables) == _shapes(task.original)
  for a, b in zip(jax.tree.leaves(first.variables),
                  jax.tree.leaves(second.variables)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b),
                                  err_msg=f'{name} is not deterministic')
  changed = any(
      not np.array_equal(np.asarray(a), np.asarray(b))
      for a, b in zip(jax.tree.leaves(first.variables['params']),
                      jax.tree.leaves(task.original['params'])))
  if name not in MAY_KEEP_ORIGINAL:
    assert changed, f'{name} returned M_o unchanged'
  assert all(np.isfinite(np.asarray(x)).all()
             for x in jax.tree.leaves(first.variables))


# --- selection.select_with_goel_score ----------------------------------------

@dataclasses.dataclass(frozen=True)
class _Hp:
  scale: float


def _scaled_method(calls, diverging=()):
  """A method that scales M_o's last layer: a larger scale changes more S_f
  predictions (ending at chance), so Goel's score has a unique best."""
  def unlearn(task, hparams, key):
    calls.append((hparams.scale, np.asarray(jax.random.key_data(key)).tolist()))
    if hparams.scale in diverging:
      raise FloatingPointError('NaN')
    params = jax.tree.map(lambda x: x, task.original['params'])
    noise = jax.random.normal(jax.random.key(0),
                              np.shape(params['Dense_0']['kernel']))
    params['Dense_0'] = dict(params['Dense_0'])
    params['Dense_0']['kernel'] = (params['Dense_0']['kernel']
                                   + hparams.scale * noise)
    return {'params': params, 'batch_stats': task.original['batch_stats']}
  return Method('scaled', unlearn, _Hp, lambda task: [])


def _score(task, method, hparams):
  from unlearnjax import metrics, training  # pylint: disable=g-import-not-at-top
  variables = as_unlearned(method.unlearn(task, hparams,
                                          jax.random.key(0))).variables
  images = task.train.images[task.forget]
  changed = metrics.changed_share(
      training.predict(task.model, task.original, images),
      training.predict(task.model, variables, images))
  return metrics.goel_selection_score(
      training.accuracy(task.model, variables, task.validation), changed)


def test_selection_picks_the_best_score_with_one_key_for_all(task):
  # The scaled method edits the small CNN's output layer.
  assert 'Dense_0' in task.original['params']
  calls = []
  method = _scaled_method(calls)
  grid = [_Hp(s) for s in (0.0, 0.3, 1.0, 3.0, 30.0)]
  scores = [_score(task, method, h) for h in grid]
  calls.clear()
  picked = selection.select_with_goel_score(method, task, jax.random.key(5),
                                            grid)
  assert picked.hparams == grid[int(np.argmax(scores))]
  assert picked.score == pytest.approx(max(scores))
  assert picked.num_tried == len(grid) and picked.num_diverged == 0
  # Every configuration got the same key: differences are the hparams'.
  assert len(calls) == len(grid)
  assert len({str(k) for _, k in calls}) == 1


def test_a_diverging_configuration_loses_the_search(task):
  # The scaled method edits the small CNN's output layer.
  assert 'Dense_0' in task.original['params']
  grid = [_Hp(s) for s in (0.0, 0.3, 1.0, 3.0, 30.0)]
  scores = [_score(task, _scaled_method([]), h) for h in grid]
  best = grid[int(np.argmax(scores))]
  picked = selection.select_with_goel_score(
      _scaled_method([], diverging={best.scale}), task, jax.random.key(5),
      grid)
  assert picked.hparams != best and picked.num_diverged == 1
  with pytest.raises(FloatingPointError, match='every configuration'):
    selection.select_with_goel_score(
        _scaled_method([], diverging={h.scale for h in grid}), task,
        jax.random.key(5), grid)
