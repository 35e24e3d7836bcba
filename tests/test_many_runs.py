"""Many runs per compiled call (issue 10): `training.many_step`,
`training.fit_many`, SCRUB's grid together, and selection over it give the
numbers of one run at a time, bit for bit on the CPU."""

import dataclasses

import jax
import numpy as np
import pytest

from unlearnjax import forget as forget_lib, training, tuning
from unlearnjax.selection import select_with_goel_score
from unlearnjax.unlearn import UnlearnTask, get_method
from unlearnjax.unlearn import scrub


def same(a, b) -> bool:
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(leaves_a) == len(leaves_b) and all(
      np.array_equal(np.asarray(x), np.asarray(y))
      for x, y in zip(leaves_a, leaves_b))


def test_fit_many_equals_fit_one_at_a_time(digits, tiny_model):
  train, _, _ = digits
  recipe = training.Recipe(steps=23, batch_size=32, learning_rate=0.05)
  start = training.fit(tiny_model, recipe.scaled(0.3), train,
                       jax.random.key(9))
  # Five runs: more than one call's worth on a CPU (4 + 1), different keys,
  # index sets (one smaller than a batch) and starting points.
  keys = [jax.random.key(k) for k in (0, 1, 2, 0, 5)]
  indices = [None, np.arange(100, 700), np.arange(0, 20), np.arange(50, 900),
             np.arange(len(train))[::3]]
  starts = [None, start, None, None, start]
  assert len(keys) > tuning.runs_per_call(len(keys))
  many = training.fit_many(tiny_model, recipe, train, keys, indices=indices,
                           variables=starts)
  for j, (key, rows, init) in enumerate(zip(keys, indices, starts)):
    one = training.fit(tiny_model, recipe, train, key, indices=rows,
                       variables=init)
    assert same(one, many[j]), f'run {j} differs from fit'
  assert not same(many[0], many[1])


def test_fit_many_returns_a_diverged_run_and_keeps_the_others(digits,
                                                              tiny_model):
  train, _, _ = digits
  recipe = training.Recipe(steps=5, batch_size=32)
  good = training.init_variables(tiny_model, jax.random.key(0),
                                 train.image_shape)
  bad = jax.tree.map(lambda x: np.full_like(x, np.nan), good)
  out = training.fit_many(tiny_model, recipe, train,
                          [jax.random.key(0), jax.random.key(0)],
                          variables=[bad, good])
  assert isinstance(out[0], FloatingPointError)
  assert 'run 1 of 2' in str(out[0])
  assert same(out[1], training.fit(tiny_model, recipe, train,
                                   jax.random.key(0), variables=good))


def test_fit_many_and_many_step_refuse_bad_counts(digits, tiny_model):
  train, _, _ = digits
  with pytest.raises(ValueError, match='one per run'):
    training.fit_many(tiny_model, training.Recipe(steps=1, batch_size=32),
                      train, [jax.random.key(0)], indices=[None, None])
  with pytest.raises(ValueError, match='count=0'):
    training.many_step(lambda s, b: (s, {}), 0)


@pytest.fixture(scope='module')
def scrub_task(trained, digits, tiny_model):
  manipulation, validation, original = trained
  forget = forget_lib.sample_forget(manipulation.manipulated, 0.5, 0)
  recipe = training.Recipe(steps=40, batch_size=32, learning_rate=0.05)
  return UnlearnTask(
      model=tiny_model, original=original, train=manipulation.train,
      forget=forget, retain=forget_lib.retain_indices(
          len(manipulation.train), forget),
      validation=validation, recipe=recipe)


def test_scrub_grid_together_equals_one_at_a_time(scrub_task):
  key = jax.random.key(4)
  # Goel's α grid (one schedule) plus a configuration with its own budget
  # and max-step share (a second schedule, run apart).
  grid = scrub.goel_grid(scrub_task)[:5] + [
      scrub.ScrubHparams(budget_fraction=0.5, max_steps_fraction=0.1)]
  many = scrub.unlearn_many(scrub_task, grid, key)
  for hparams, together in zip(grid, many):
    assert same(scrub.unlearn(scrub_task, hparams, key), together), hparams
  assert not same(many[0], many[4])


def test_selection_over_a_grid_run_together_picks_the_same(scrub_task):
  method = get_method('scrub')
  assert method.unlearn_many is not None
  key = jax.random.key(7)
  grid = scrub.goel_grid(scrub_task)[:6]
  together = select_with_goel_score(method, scrub_task, key, grid)
  apart = select_with_goel_score(
      dataclasses.replace(method, unlearn_many=None), scrub_task, key, grid)
  assert together.hparams == apart.hparams
  assert together.score == apart.score
  assert together.num_tried == apart.num_tried == 6
  assert same(together.variables, apart.variables)
