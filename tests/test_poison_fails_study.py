"""End to end: the poison-removal study (Pawelczyk et al.) on a seconds-long config."""

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys

from absl import flags
from ml_collections import config_flags
import numpy as np
import pytest

from unlearnjax import cli, results, training
from unlearnjax.errors import ConfigError
from unlearnjax.studies import poison_fails
from unlearnjax.unlearn.registry import default_hparams

ROOT = os.path.join(os.path.dirname(__file__), '..')
CONFIG_PATH = os.path.join(ROOT, 'experiments', 'configs', 'poison_fails.py')
SCRIPT = os.path.join(ROOT, 'experiments', 'poison_fails.py')
_spec = importlib.util.spec_from_file_location(
    'poison_fails_config', CONFIG_PATH)
poison_fails_config = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(poison_fails_config)

FIELDS = ('method', 'manipulation', 'dataset', 'model', 'seed', 'hparams',
          'seconds', 'diverged', 'budget_fraction', 'test_accuracy', 'gus',
          'gus_z', 'tpr_at_fpr_0.01', 'tpr_at_fpr_0.001', 'roc_tpr',
          'n_manipulated')


def smoke_config(**changes):
  config = poison_fails_config.get_config('smoke')
  config.gaussian.recipe.steps = 20
  config.budgets = (0.1, 0.2)
  config.methods = ('gd', 'neggrad_plus', 'ssd')  # SSD: no budget
  for name, value in changes.items():
    config[name] = value
  return config


@pytest.fixture(scope='module')
def study(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('poison_fails'))
  return workdir, poison_fails.run(smoke_config(), workdir)


def test_one_row_per_run(study):
  _, rows = study
  # M_o + M* + 2 budgeted methods x 2 budgets + SSD once.
  assert len(rows) == 2 + 2 * 2 + 1
  for row in rows:
    for field in FIELDS:
      assert field in row, field
  assert len({r['run_key'] for r in rows}) == len(rows)
  budgets = sorted((r['method'], r['budget_fraction']) for r in rows
                   if r['method'] in ('gd', 'neggrad_plus'))
  assert budgets == [('gd', 0.1), ('gd', 0.2), ('neggrad_plus', 0.1),
                     ('neggrad_plus', 0.2)]
  for row in rows:
    if row['method'] == 'gd':
      assert row['hparams']['budget_fraction'] == row['budget_fraction']
      assert row['n_forget'] == row['n_manipulated']  # found_fraction 1.0
    assert 0 <= row['test_accuracy'] <= 1
    assert np.all(np.diff(row['roc_tpr']) >= 0)  # TPR grows with FPR
    assert row['diverged'] is False
    if row['method'] not in ('none', 'oracle'):
      # sweep.timed(): compilation apart from the method's seconds.
      assert row['seconds'] >= 0 and row['compile_seconds'] >= 0
  # SSD has no budget_fraction field (Method.takes_budget): it runs once.
  ssd_row, = [r for r in rows if r['method'] == 'ssd']
  assert ssd_row['budget_fraction'] is None


def test_report_files_are_written(study):
  workdir, rows = study
  from unlearnjax.reports import poison_fails as report_poison_fails  # pylint: disable=g-import-not-at-top
  report_poison_fails.write_poison_fails_report(rows, workdir)
  for name in ('figure2.png', 'figure2.md', 'figure7.png', 'report.md'):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  text = open(os.path.join(workdir, 'figure2.md')).read()
  assert 'NegGrad+' in text and '20% budget' in text and 'Retrain' in text


def test_rerun_skips_finished_runs(study, monkeypatch):
  workdir, rows = study

  def no_work(*args, **kwargs):
    raise AssertionError('a finished run was redone')

  monkeypatch.setattr(training, 'fit', no_work)
  monkeypatch.setattr(poison_fails, 'build_poisoned', no_work)
  assert len(poison_fails.run(smoke_config(), workdir)) == len(rows)


def test_a_new_budget_runs_only_the_new_runs(study, tmp_path, monkeypatch):
  workdir, rows = study
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  from unlearnjax import manipulations  # pylint: disable=g-import-not-at-top

  def no_poisoning(*args, **kwargs):
    raise AssertionError('the cached poisons were crafted again')

  monkeypatch.setitem(manipulations.MANIPULATIONS, 'gaussian',
                      manipulations.Registered(no_poisoning, 'Gaussian'))
  again = poison_fails.run(smoke_config(budgets=(0.1, 0.2, 0.3)), copy)
  assert len(again) == len(rows) + 2
  same = {r['run_key']: r for r in rows}
  for row in again:
    if row['run_key'] in same:
      assert row['test_accuracy'] == same[row['run_key']]['test_accuracy']


@pytest.mark.parametrize('changes,message', [
    ({'budgets': (0.0, 0.1)}, r'outside \(0, 1\]'),
    ({'budgets': ()}, 'budgets'),
    ({'methods': ('gd', 'magic')}, 'Unknown method'),
    ({'poisons': ('gaussian', 'witchcraft')}, 'Unknown manipulation'),
    ({'found_fraction': 1.5}, r'\(0, 1\]'),
])
def test_bad_config_is_rejected_before_any_work(changes, message, tmp_path):
  with pytest.raises(ConfigError, match=message):
    poison_fails.run(smoke_config(**changes), str(tmp_path))
  assert not os.path.exists(tmp_path / 'results.jsonl')


def test_script_exits_non_zero_with_a_clear_message(tmp_path):
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'experiments', 'poison_fails.py'),
       f'--workdir={tmp_path}',
       f'--config={ROOT}/experiments/configs/poison_fails.py:smoke',
       '--config.budgets=0.1,2.0'],
      capture_output=True, text=True, timeout=300,
      env={**os.environ, 'XLA_FLAGS': ''})
  assert proc.returncode != 0
  assert ('error: --config.budgets=0.1,2.0: budgets must be a number in '
          '(0, 1.0]') in proc.stderr
  assert 'Traceback' not in proc.stderr


def test_every_named_config_loads():
  for name in ('default', 'digits_3seeds', 'gaussian', 'smoke', 'cifar10'):
    poison_fails.validate_config(poison_fails_config.get_config(name))
  with pytest.raises(ValueError, match='Unknown config'):
    poison_fails_config.get_config('imagenet')


def test_crafted_poisons_run_through_the_study(tmp_path):
  """Targeted and indiscriminate poisons at toy sizes: the rows carry target
  success, and the surrogate is the victim's model and recipe."""
  config = smoke_config(poisons=('gradient_matching', 'gradient_canceling'),
                        methods=('gd',), budgets=(0.1,))
  config.gradient_matching.num_poisons = 8
  config.gradient_matching.num_targets = 2
  config.gradient_matching.restarts = 1
  config.gradient_matching.crafting_steps = 3
  config.gradient_canceling.num_poisons = 8
  config.gradient_canceling.canceling_steps = 3
  config.gradient_canceling.corruption_steps = 2
  rows = poison_fails.run(config, str(tmp_path))
  assert len(rows) == 2 * 3
  targeted = [r for r in rows if r['manipulation'] == 'gradient_matching']
  assert all(0 <= r['target_success'] <= 1 for r in targeted)
  assert {r['n_manipulated'] for r in targeted} == {8}
  settings = poison_fails.manipulation_settings(config, 'gradient_matching')
  assert settings['surrogate_steps'] == config.recipe.steps
  assert settings['model'] == config.model
  canceling = [r for r in rows if r['manipulation'] == 'gradient_canceling']
  assert all('target_success' not in r for r in canceling)
  from unlearnjax.reports import poison_fails as report_poison_fails  # pylint: disable=g-import-not-at-top
  report_poison_fails.write_poison_fails_report(rows, str(tmp_path))
  for name in ('figure3.png', 'figure3.md', 'table2.png', 'table2.md'):
    assert os.path.getsize(tmp_path / name) > 0, name


def smoke_flags(*overrides, methods='gd,neggrad_plus,ssd', budgets='0.1,0.2'):
  """The script's flags for `smoke_config()` (same settings, same run keys)."""
  return [f'--config={CONFIG_PATH}:smoke', '--config.gaussian.recipe.steps=20',
          f'--config.budgets={budgets}', f'--config.methods={methods}',
          *overrides]


def parsed_config(*overrides, **kwargs):
  """The config as the script's flags give it (absl + config_flags)."""
  values = flags.FlagValues()
  argv = ['poison_fails.py', *smoke_flags(*overrides, **kwargs)]
  config_flags.DEFINE_config_file('config', CONFIG_PATH, flag_values=values,
                                  lock_config=True, sys_argv=argv)
  values(argv)
  cli.split_comma_lists(values.config)  # as cli.run_and_report does
  return values.config


def other_value(value):
  """A value of the same type as `value`, different from it."""
  if isinstance(value, bool):
    return not value
  if isinstance(value, int):
    return value + 1
  if isinstance(value, float):
    return value / 2 if value else 0.5
  return {'ce_plus_kl': 'kl', 'kl': 'ce_plus_kl', 'per_batch': 'exact',
          'retain': 'train'}[value]


@pytest.mark.parametrize('method_name',
                         poison_fails_config.METHODS + ('ssd',))
def test_every_hparams_override_reaches_the_method(method_name):
  """Every `--config.hparams.<method>.<field>=` of the config's methods: the
  run uses it (and its run key changes); the budget comes from
  --config.budgets."""
  default = parsed_config(methods=method_name)
  method = poison_fails.get_method(method_name)
  for field, value in default_hparams(method_name).items():
    override = f'--config.hparams.{method_name}.{field}={other_value(value)}'
    config = parsed_config(override, methods=method_name)
    if field == 'budget_fraction':
      with pytest.raises(ConfigError, match='config.budgets'):
        poison_fails.validate_config(config)
      continue
    poison_fails.validate_config(config)
    budget = 0.1 if method.takes_budget else None
    _, hparams = poison_fails.method_hparams(config, method_name, budget)
    assert getattr(hparams, field) == other_value(value), override
    if method.takes_budget:
      assert hparams.budget_fraction == budget
    base = poison_fails.setting(config, 'gaussian')
    assert (poison_fails._keys(config, base, 0)[(method_name, budget)] !=
            poison_fails._keys(default, base, 0)[(method_name, budget)])
  # SCRUB's settings are the config's own (SCRUB_HPARAMS), stated in full.
  _, scrub = poison_fails.method_hparams(default, 'scrub', 0.1)
  for field, value in poison_fails_config.SCRUB_HPARAMS.items():
    assert getattr(scrub, field) == value


def test_documented_overrides_run_through_the_script(study, tmp_path):
  """The config doc's `--config.hparams.gradient_ascent.learning_rate_scale=`
  and `--config.hparams.scrub.distill_weight=`: the rows show them; M_o, M*
  and the poisons come from the workdir."""
  workdir, _ = study
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  proc = subprocess.run(
      [sys.executable, SCRIPT, f'--workdir={copy}', *smoke_flags(
          '--config.hparams.gradient_ascent.learning_rate_scale=0.001',
          '--config.hparams.scrub.distill_weight=0.01',
          methods='gradient_ascent,scrub', budgets='0.1')],
      capture_output=True, text=True, timeout=600,
      env={**os.environ, 'XLA_FLAGS': ''})
  assert proc.returncode == 0, proc.stderr[-3000:]
  new = [r for r in results.read_rows(copy)
         if r['method'] in ('gradient_ascent', 'scrub')]
  assert len(new) == 2
  rows = {r['method']: r for r in new}
  assert rows['gradient_ascent']['hparams']['learning_rate_scale'] == 0.001
  assert rows['scrub']['hparams']['distill_weight'] == 0.01
  assert rows['scrub']['budget_fraction'] == 0.1
  # No model was trained again: the checkpoints are the study's.
  assert (sorted(os.listdir(os.path.join(copy, 'checkpoints'))) ==
          sorted(os.listdir(os.path.join(workdir, 'checkpoints'))))


@pytest.mark.parametrize('overrides,message', [
    ([f'--config={CONFIG_PATH}:smoke',
      '--config.hparams.gd.learning_rat_scale=0.5'],
     "config.hparams.gd has no field 'learning_rat_scale'; valid: "
     'budget_fraction, learning_rate_scale'),
    (['--config.hparams.magic.learning_rate_scale=0.5'],  # default config
     "config.hparams has no field 'magic'"),
    ([f'--config={CONFIG_PATH}:smoke',
      '--config.hparams.gd.learning_rate_scale=fast'],
     'could not convert string to float'),
    ([f'--config={CONFIG_PATH}:smoke',
      '--config.hparams.gd.budget_fraction=0.3'],
     'config.hparams.gd.budget_fraction: a budgeted method runs at every '
     'budget of config.budgets'),
])
def test_a_wrong_hparams_override_is_one_clear_line(overrides, message,
                                                    tmp_path):
  proc = subprocess.run(
      [sys.executable, SCRIPT, f'--workdir={tmp_path}', *overrides],
      capture_output=True, text=True, timeout=300,
      env={**os.environ, 'XLA_FLAGS': ''})
  assert proc.returncode == 1
  assert 'error: ' in proc.stderr and message in proc.stderr, proc.stderr
  assert 'Traceback' not in proc.stderr
  assert not os.path.exists(tmp_path / 'results.jsonl')


def test_a_diverging_method_is_a_row_and_the_sweep_goes_on(study, tmp_path,
                                                           monkeypatch):
  workdir, rows = study
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  from unlearnjax.unlearn import registry  # pylint: disable=g-import-not-at-top

  def diverge(task, hparams, key):
    raise FloatingPointError('NaN in the unlearned weights')

  monkeypatch.setitem(registry.METHODS, 'gd', dataclasses.replace(
      registry.METHODS['gd'], unlearn=diverge))
  config = smoke_config()
  config.hparams.gd.learning_rate_scale = 0.5  # new gd runs, the rest done
  again = poison_fails.run(config, copy)
  assert len(again) == len(rows)
  diverged = [r for r in again if r['diverged']]
  assert sorted(r['budget_fraction'] for r in diverged) == [0.1, 0.2]
  for row in diverged:
    assert row['method'] == 'gd' and row['manipulation'] == 'gaussian'
    assert row['seed'] == 0 and 'NaN' in row['error']
  assert {r['method'] for r in again if not r['diverged']} == {
      'none', 'oracle', 'neggrad_plus', 'ssd'}
  # A diverged run is finished: a rerun sets nothing up, runs nothing.
  def no_work(*args, **kwargs):
    raise AssertionError('a finished run was redone')

  monkeypatch.setattr(poison_fails, 'build_poisoned', no_work)
  assert len(poison_fails.run(config, copy)) == len(rows)
  lines = open(os.path.join(copy, 'results.jsonl')).read().splitlines()
  assert sum(json.loads(l).get('diverged', False) for l in lines) == 2
