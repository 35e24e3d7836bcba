"""Curves: what `training.run_steps` records, where, and that it only observes."""

import json
import os
import time

import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from unlearnjax import curves, parallel, sweep, training
from conftest import tree_allclose

TAGS = {'train/loss', 'train/accuracy', curves.FORGET, curves.VALIDATION}


def _loop(digits, tiny_model, tiny_recipe):
  """(run(steps, curve) -> (variables, last metrics), forget split)."""
  train, validation, _ = digits
  forget = train.subset(np.arange(40))
  variables = training.init_variables(tiny_model, jax.random.key(0),
                                      train.image_shape)
  tx = training.make_optimizer(tiny_recipe)
  step_fn = training.jitted_train_step(tiny_model, tiny_recipe)
  size = tiny_recipe.batch_size

  def make_batch(i):
    take = (np.arange(size) + i * size) % len(train)
    return parallel.shard_batch({'image': train.images[take],
                                 'label': train.labels[take]})

  def run(steps, curve=None):
    state = parallel.replicate(training.create_train_state(variables, tx))
    state, metrics = training.run_steps(step_fn, state, make_batch, steps,
                                        what='test', curve=curve)
    return jax.device_get(state.variables), metrics

  return run, forget, validation


def _points(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_run_steps_writes_tensorboard_and_jsonl(digits, tiny_model,
                                                tiny_recipe, tmp_path):
  run, forget, validation = _loop(digits, tiny_model, tiny_recipe)
  evaluate = curves.evaluator(tiny_model, forget, validation)
  workdir = str(tmp_path)
  with curves.recording(workdir, 'study', 'one/method', 5, evaluate) as curve:
    with_curve, _ = run(12, curve)
  points = _points(curves.jsonl_path(workdir, 'one/method'))
  assert [p['step'] for p in points] == [0, 5, 10, 12]
  assert set(points[0]) == {'step', curves.FORGET, curves.VALIDATION}
  assert all(set(p) == {'step', *TAGS} for p in points[1:])

  # The accuracies are training.accuracy on the variables at that step, the
  # loss the step's own (a run of s steps is the first s steps of this one).
  for point in points:
    variables, metrics = run(point['step']) if point['step'] else (
        jax.device_get(training.init_variables(
            tiny_model, jax.random.key(0), forget.image_shape)), None)
    assert point[curves.FORGET] == training.accuracy(tiny_model, variables,
                                                     forget)
    assert point[curves.VALIDATION] == training.accuracy(
        tiny_model, variables, validation)
    if metrics is not None:
      np.testing.assert_allclose(point['train/loss'], metrics['loss'],
                                 rtol=1e-6)
  tree_allclose(with_curve, run(12)[0], rtol=0, atol=0)

  logdir = curves.tensorboard_dir(workdir, 'study', 'one/method')
  events = event_accumulator.EventAccumulator(logdir)
  events.Reload()
  assert set(events.Tags()['scalars']) == TAGS
  for tag in TAGS:
    scalars = events.Scalars(tag)
    expected = [(p['step'], p[tag]) for p in points if tag in p]
    assert [s.step for s in scalars] == [s for s, _ in expected]
    np.testing.assert_allclose([s.value for s in scalars],
                               [v for _, v in expected], rtol=1e-6)


def test_fit_is_bit_identical_with_a_curve(digits, tiny_model, tmp_path):
  train, validation, _ = digits
  recipe = training.Recipe(steps=13, batch_size=32)
  plain = training.fit(tiny_model, recipe, train, jax.random.key(3))
  evaluate = curves.evaluator(tiny_model, train.subset(np.arange(20)),
                              validation)
  with curves.recording(str(tmp_path), 's', 'r', 4, evaluate) as curve:
    observed = training.fit(tiny_model, recipe, train, jax.random.key(3),
                            curve=curve)
  tree_allclose(plain, observed, rtol=0, atol=0)
  assert [p['step'] for p in _points(curves.jsonl_path(str(tmp_path), 'r'))
          ] == [0, 4, 8, 12, 13]


def test_rerun_keeps_a_finished_curve_and_replaces_a_killed_one(tmp_path):
  workdir = str(tmp_path)
  evaluate = lambda variables: {curves.FORGET: 0.5}

  def record(steps, fail_at=None):
    with curves.recording(workdir, 's', 'r', 2, evaluate) as curve:
      if curve is None:
        return False
      for step in range(steps + 1):
        if step == fail_at:
          raise KeyboardInterrupt
        curve.record(step, {'loss': float(step)}, None)
      return True

  with pytest.raises(KeyboardInterrupt):
    record(6, fail_at=4)
  assert not curves.done(workdir, 'r')
  assert record(6)
  assert not record(6)  # finished: not rewritten
  points = _points(curves.jsonl_path(workdir, 'r'))
  assert [p['step'] for p in points] == list(range(7))
  events = event_accumulator.EventAccumulator(
      curves.tensorboard_dir(workdir, 's', 'r'))
  events.Reload()
  assert [s.step for s in events.Scalars('train/loss')] == list(range(7))


def test_a_resumed_run_keeps_its_points_up_to_the_restart(tmp_path):
  workdir = str(tmp_path)
  first = curves.Writer(workdir, 's', 'r')
  for step in range(0, 12, 2):
    first.write(step, {'train/loss': float(step)})
  first.close(complete=False)  # killed after step 10, checkpoint at 6
  second = curves.Writer(workdir, 's', 'r')
  for step in range(8, 14, 2):
    second.write(step, {'train/loss': -float(step)}, start=6)
  second.close()
  points = _points(curves.jsonl_path(workdir, 'r'))
  assert [(p['step'], p['train/loss']) for p in points] == [
      (0, 0.), (2, 2.), (4, 4.), (6, 6.), (8, -8.), (10, -10.), (12, -12.)]
  events = event_accumulator.EventAccumulator(
      curves.tensorboard_dir(workdir, 's', 'r'))
  events.Reload()
  assert [(s.step, s.value) for s in events.Scalars('train/loss')] == [
      (p['step'], p['train/loss']) for p in points]


def test_curve_points_are_left_out_of_timed():
  with sweep.timed() as timing:
    with sweep.untimed():
      time.sleep(0.2)
      with sweep.untimed():  # nested: counted once
        time.sleep(0.05)
    time.sleep(0.05)
  assert timing.untimed_seconds >= 0.25
  assert 0.04 <= timing.seconds < 0.2


def test_no_curve_when_off(tmp_path):
  with curves.recording(str(tmp_path), 's', 'r', 0, None) as curve:
    assert curve is None
  assert not os.path.exists(os.path.join(str(tmp_path), 'curves'))


def test_corrective_smoke_records_one_run_per_method(tmp_path):
  import sys  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..',
                                  'experiments'))
  from configs import corrective as corrective_config  # pylint: disable=g-import-not-at-top
  from unlearnjax.reports import corrective as report  # pylint: disable=g-import-not-at-top
  from unlearnjax.studies import corrective  # pylint: disable=g-import-not-at-top
  config = corrective_config.get_config('smoke')
  config.manipulations = ('badnet',)
  config.found_fractions = (0.5, 1.0)
  config.recipe.steps = 20
  config.budget_fraction = 0.2
  assert config.curves_every == 5
  workdir = str(tmp_path)
  rows = corrective.run(config, workdir)
  run = 'badnet-seed0-f0.5'
  folder = os.path.join(workdir, 'curves', run)
  stepped = {'retrain', 'finetune', 'bad_teacher', 'scrub'}
  assert set(os.listdir(folder)) == {f'{m}.jsonl'
                                     for m in stepped | {'original'}}
  assert os.listdir(os.path.join(workdir, 'curves')) == [run]
  lengths = {m: _points(os.path.join(folder, f'{m}.jsonl'))
             for m in stepped | {'original'}}
  assert [p['step'] for p in lengths['original']] == [0, 5, 10, 15, 20]
  assert [p['step'] for p in lengths['finetune']] == [0, 4]  # 0.2 x 20 steps
  for method in stepped | {'original'}:
    assert os.listdir(curves.tensorboard_dir(workdir, 'corrective',
                                             f'{run}/{method}'))
  path = report.write_corrective_report(rows, workdir)
  with open(path) as f:
    text = f.read()
  assert '![Curves](curves.png)' in text
  assert 'No step curve (no step loop, or no curve run): ssd, ssd_exact.' in text
  assert os.path.getsize(os.path.join(workdir, 'curves.png')) > 0

  # A rerun (every run finished) neither runs nor rewrites a curve.
  before = {m: open(os.path.join(folder, f'{m}.jsonl')).read() for m in lengths}
  events = sorted(os.listdir(curves.tensorboard_dir(workdir, 'corrective',
                                                    f'{run}/scrub')))
  corrective.run(config, workdir)
  assert before == {m: open(os.path.join(folder, f'{m}.jsonl')).read()
                    for m in lengths}
  assert events == sorted(os.listdir(curves.tensorboard_dir(
      workdir, 'corrective', f'{run}/scrub')))
