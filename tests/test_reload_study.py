"""End to end: the RELOAD study (RELOAD §4, Tables 1-3) on a seconds-long config."""

import dataclasses
import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from unlearnjax import data, models, results, sweep, training
from unlearnjax.errors import ConfigError
from unlearnjax.studies import reload as reload_study
from unlearnjax.unlearn import registry
from unlearnjax.unlearn import reload as reload_lib

ROOT = os.path.join(os.path.dirname(__file__), '..')
_spec = importlib.util.spec_from_file_location(
    'reload_config', os.path.join(ROOT, 'experiments', 'configs', 'reload.py'))
reload_config = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reload_config)

FIELDS = ('method', 'scenario', 'dataset', 'model', 'seed', 'hparams',
          'seconds', 'na', 'delta_fa', 'delta_fe', 'fmia', 'delta_fmia',
          'nskl', 'fskl', 'cost', 'test_accuracy', 'n_forget', 'n_new',
          'retrain_seconds', 'remedial')
SCENARIOS = ('random_10', 'random_30', 'in_class', 'cross_pattern')


def smoke_config(**changes):
  config = reload_config.get_config('smoke')
  for name, value in changes.items():
    config[name] = value
  return config


@pytest.fixture(scope='module')
def study(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('reload'))
  return workdir, reload_study.run(smoke_config(), workdir)


def _row(rows, scenario, method):
  found = [r for r in rows if r['scenario'] == scenario
           and r['method'] == method]
  assert len(found) == 1, (scenario, method)
  return found[0]


def test_one_row_per_run(study):
  _, rows = study
  # Per scenario: M_o, M*, a second M* (noise floor) and the two methods
  # ('retrain' is M* itself).
  assert len(rows) == len(SCENARIOS) * 5
  assert len({r['run_key'] for r in rows}) == len(rows)
  for row in rows:
    for field in FIELDS:
      assert field in row, (row['method'], field)
    assert 0 <= row['na'] <= 1 and 0 <= row['test_accuracy'] <= 1
  for scenario in SCENARIOS:
    retrain = _row(rows, scenario, 'retrain')
    assert retrain['delta_fa'] == 0 and retrain['fskl'] == 0
    assert retrain['cost'] == 1.0
    assert _row(rows, scenario, 'original')['cost'] is None
    assert _row(rows, scenario, 'retrain_rerun')['delta_fa'] >= 0
    reload_row = _row(rows, scenario, 'reload')
    assert reload_row['method_data_gradient_cached']  # g_D from M_o's step
    assert reload_row['cost'] == pytest.approx(
        reload_row['seconds'] / reload_row['retrain_seconds'])
    for method in ('finetune', 'reload'):   # Cost without compilation
      row = _row(rows, scenario, method)
      assert row['seconds'] >= 0 and row['compile_seconds'] >= 0
      assert row['diverged'] is False
      assert row['hparams'] == dataclasses.asdict(
          reload_study.method_hparams(smoke_config(), method)[1])
  assert _row(rows, 'random_30', 'reload')['n_forget'] == round(
      0.3 * _row(rows, 'random_30', 'reload')['n_train'])
  in_class = _row(rows, 'in_class', 'finetune')
  assert in_class['n_forget'] == 10 and 'forget_class' in in_class
  assert 'forget_class_test_accuracy' in in_class
  cross = _row(rows, 'cross_pattern', 'finetune')
  assert cross['remedial'] and cross['shortcut_classes'] == [1, 7]
  assert cross['n_new'] == cross['n_train']  # retain ∪ corrected
  assert cross['task_view'].startswith('remedial')
  assert _row(rows, 'cross_pattern', 'reload')['task_view'] == 'own'
  for method in ('original', 'retrain', 'finetune', 'reload'):
    row = _row(rows, 'cross_pattern', method)
    assert 0 <= row['triggered_test_accuracy'] <= 1
    assert 0 <= row['affected_accuracy'] <= 1


def test_report_files_are_written(study):
  workdir, rows = study
  from unlearnjax.reports import reload as report_reload  # pylint: disable=g-import-not-at-top
  report_reload.write_reload_report(rows, workdir)
  for name in ['figure.png', 'report.md'] + [f'table_{s}.md'
                                             for s in SCENARIOS]:
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  table = open(os.path.join(workdir, 'table_cross_pattern.md')).read()
  assert 'D_new^(test,§)' in table and 'RELOAD' in table
  assert 'Retrain (M*)' in table and 'Original (M_o)' in table
  report = open(os.path.join(workdir, 'report.md')).read()
  assert 'ΔFMIA' in report and 'Closest to M*' in report


def test_rerun_skips_finished_runs(study, monkeypatch):
  workdir, rows = study

  def no_work(*args, **kwargs):
    raise AssertionError('a finished run was redone')

  monkeypatch.setattr(training, 'fit', no_work)
  monkeypatch.setattr(reload_lib, 'full_data_gradient', no_work)
  monkeypatch.setattr(data, 'load_from_config', no_work)
  assert len(reload_study.run(smoke_config(), workdir)) == len(rows)


def test_data_gradient_is_stored_with_the_original_and_reused(
    study, tmp_path, monkeypatch):
  workdir, rows = study
  # One M_o (and one g_D) for the clean data, one for the crossed data.
  stored = glob.glob(os.path.join(workdir, 'checkpoints',
                                  '*-original-data_gradient-b64'))
  assert len(stored) == 2
  for path in stored:
    assert os.path.isdir(path[:-len('-data_gradient-b64')])
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  os.remove(os.path.join(copy, 'results.jsonl'))

  def no_training(*args, **kwargs):
    raise AssertionError('M_o or M* was trained again')

  calls = []
  real_gradient = reload_lib.full_data_gradient

  def gradient(model, variables, split, rows=None, **kwargs):
    calls.append(rows)
    return real_gradient(model, variables, split, rows, **kwargs)

  monkeypatch.setattr(reload_lib, 'full_data_gradient', gradient)
  monkeypatch.setattr(sweep, 'trained_model',
                      _restore_only(sweep.trained_model, no_training))
  config = smoke_config(methods=('reload',))
  again = reload_study.run(config, copy)
  assert len(again) == len(SCENARIOS) * 4
  assert calls and all(r is not None for r in calls)  # only g_new, never g_D
  for row in again:
    assert row['data_gradient_computed'] is False
    if row['method'] == 'reload':
      assert row['method_data_gradient_cached']
      before = _row(rows, row['scenario'], 'reload')
      assert row['delta_fa'] == pytest.approx(before['delta_fa'])

  # The stored g_D is ∇L(D) at M_o, summed over the recipe's batches.
  train, _, _ = data.load_from_config(config, 0)
  model = models.get_model(config.model, train.num_classes,
                           **config.model_kwargs)
  name = reload_study.original_checkpoint_name(config, None, 0)
  original = reload_study.original_and_data_gradient(
      copy, name, model, reload_study.recipe_from_config(config), train,
      jax.random.key(0), {}, batch_size=64)
  assert not original.data_gradient_computed
  recomputed = real_gradient(model, original.variables, train, batch_size=64)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-6),
               original.data_gradient, recomputed)


def _restore_only(trained_model, fail):
  """`trained_model` that fails instead of training (checkpoints only)."""
  from unlearnjax import checkpoint  # pylint: disable=g-import-not-at-top

  def wrapped(workdir, name, *args, **kwargs):
    if not checkpoint.exists(os.path.join(workdir, 'checkpoints', name)):
      fail()
    return trained_model(workdir, name, *args, **kwargs)
  return wrapped


@pytest.mark.parametrize('changes,message', [
    ({'scenarios': ('random_10', 'magic')}, 'Unknown scenario'),
    ({'scenarios': ()}, 'scenarios is empty'),
    ({'methods': ('finetune', 'magic')}, 'Unknown method'),
    ({'seeds': ()}, 'seeds is empty'),
    ({'random_10': {'forget_share': 1.5}}, r'forget_share must be in \(0, 1\)'),
    ({'in_class': {'num_forget': 0}}, 'num_forget must be >= 1'),
    ({'in_class': {'num_forget': 5, 'colour': 3}}, 'unknown fields'),
    ({'hparams': {'reload': {'reset_share': 0.1}}},
     'hparams.reload has no field reset_share; valid: budget_fraction'),
    ({'hparams': {'magic': {}}}, "Unknown method 'magic'"),
    ({'mia_features': ('margin',)}, 'Unknown MIA feature'),
])
def test_bad_config_is_rejected_before_any_work(changes, message, tmp_path,
                                                monkeypatch):
  def no_work(*args, **kwargs):
    raise AssertionError('work started before the config was checked')

  monkeypatch.setattr(data, 'load_from_config', no_work)
  config = smoke_config()
  for name, value in changes.items():
    config[name] = value
  with pytest.raises(ConfigError, match=message):
    reload_study.run(config, str(tmp_path))
  assert not os.path.exists(tmp_path / 'results.jsonl')


def test_a_class_too_small_is_a_config_error(tmp_path):
  config = smoke_config(scenarios=('in_class',))
  config.in_class.num_forget = 1000
  with pytest.raises(ConfigError, match='training samples'):
    reload_study.run(config, str(tmp_path))
  assert not os.path.exists(tmp_path / 'results.jsonl')


def test_script_exits_non_zero_with_a_clear_message(tmp_path):
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'experiments', 'reload.py'),
       f'--workdir={tmp_path}',
       f'--config={ROOT}/experiments/configs/reload.py:smoke',
       '--config.scenarios=random_10,bogus'],
      capture_output=True, text=True, timeout=300,
      env={**os.environ, 'XLA_FLAGS': ''})
  assert proc.returncode != 0
  assert "error: Unknown scenario 'bogus'" in proc.stderr
  assert 'Traceback' not in proc.stderr


def test_every_named_config_loads():
  for name in ('default', 'smoke', 'cifar10', 'cifar100', 'svhn'):
    reload_study.validate_config(reload_config.get_config(name))
  with pytest.raises(ValueError, match='Unknown config'):
    reload_config.get_config('imagenet')


def test_remedial_methods_are_the_registry_s_readers_of_corrected():
  readers = {name for name, method in registry.METHODS.items()
             if method.reads_corrected}
  assert readers == {'reload', 'gar', 'grda'}


def test_a_diverging_method_is_a_row_and_the_sweep_goes_on(study, tmp_path,
                                                          monkeypatch):
  workdir, rows = study
  copy = str(tmp_path / 'copy')   # M_o, g_D and M* restored, not retrained
  shutil.copytree(workdir, copy)
  os.remove(os.path.join(copy, 'results.jsonl'))

  def diverges(task, hparams, key):
    raise FloatingPointError('loss is nan at step 3')

  monkeypatch.setitem(registry.METHODS, 'finetune', dataclasses.replace(
      registry.METHODS['finetune'], unlearn=diverges))
  config = smoke_config(scenarios=('random_10', 'cross_pattern'),
                        noise_floor=False)
  again = reload_study.run(config, copy)
  assert len(again) == 2 * 4          # M_o, M*, finetune, reload per scenario
  for scenario in ('random_10', 'cross_pattern'):
    diverged = _row(again, scenario, 'finetune')
    assert diverged['diverged'] is True
    assert diverged['error'] == 'loss is nan at step 3'
    assert diverged['seed'] == 0 and diverged['hparams']['budget_fraction']
    assert 'na' not in diverged
    after = _row(again, scenario, 'reload')   # the sweep went on
    assert after['diverged'] is False
    assert after['delta_fa'] == pytest.approx(
        _row(rows, scenario, 'reload')['delta_fa'])
  # Rerun: the diverged row is a finished run too.
  stored = len(results.read_rows(copy))
  reload_study.run(config, copy)
  assert len(results.read_rows(copy)) == stored


def _script(workdir, *overrides, timeout=300):
  return subprocess.run(
      [sys.executable, os.path.join(ROOT, 'experiments', 'reload.py'),
       f'--workdir={workdir}',
       f'--config={ROOT}/experiments/configs/reload.py:smoke', *overrides],
      capture_output=True, text=True, timeout=timeout,
      env={**os.environ, 'XLA_FLAGS': ''})


def test_documented_hparams_override_works_through_the_script(study,
                                                              tmp_path):
  """experiments/configs/reload.py documents
  `--config.hparams.reload.priming_step_size=0` (the only hparams override it
  names); the run reuses the fixture's M_o, g_D and M*."""
  workdir, _ = study
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  proc = _script(copy, '--config.hparams.reload.priming_step_size=0',
                 '--config.scenarios=random_10', '--config.methods=reload')
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(copy, 'results.jsonl')) as f:
    found = [json.loads(line) for line in f if line.strip()]
  primed = [r for r in found if r['method'] == 'reload'
            and r['scenario'] == 'random_10'
            and r['hparams']['priming_step_size'] == 0]
  assert len(primed) == 1 and not primed[0]['diverged']
  assert os.path.exists(os.path.join(copy, 'report.md'))


@pytest.mark.parametrize('override,message', [
    ('--config.hparams.reload.priming_steps=0',
     "config.hparams.reload has no field 'priming_steps'; valid: "
     'budget_fraction, '),
    ('--config.hparams.magic.budget_fraction=0.1',
     "config.hparams has no field 'magic'; valid: "),
])
def test_a_wrong_hparams_field_is_a_clear_error_through_the_script(
    override, message, tmp_path):
  proc = _script(tmp_path, override, timeout=120)
  assert proc.returncode == 1
  assert message in proc.stderr
  assert 'Traceback' not in proc.stderr
  assert not os.path.exists(tmp_path / 'results.jsonl')
