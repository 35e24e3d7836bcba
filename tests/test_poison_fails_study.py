"""End to end: the poison-removal study (Pawelczyk et al.) on a seconds-long config."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from unlearnjax import training
from unlearnjax.errors import ConfigError
from unlearnjax.studies import poison_fails

ROOT = os.path.join(os.path.dirname(__file__), '..')
_spec = importlib.util.spec_from_file_location(
    'poison_fails_config',
    os.path.join(ROOT, 'experiments', 'configs', 'poison_fails.py'))
poison_fails_config = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(poison_fails_config)

FIELDS = ('method', 'manipulation', 'dataset', 'model', 'seed', 'hparams',
          'seconds', 'budget_fraction', 'test_accuracy', 'gus', 'gus_z',
          'tpr_at_fpr_0.01', 'tpr_at_fpr_0.001', 'roc_tpr', 'n_manipulated')


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


def test_report_files_are_written(study):
  workdir, rows = study
  from unlearnjax import report_poison_fails  # pylint: disable=g-import-not-at-top
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
  import shutil  # pylint: disable=g-import-not-at-top
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  from unlearnjax import manipulations  # pylint: disable=g-import-not-at-top

  def no_poisoning(*args, **kwargs):
    raise AssertionError('the cached poisons were crafted again')

  monkeypatch.setitem(manipulations.MANIPULATIONS, 'gaussian', no_poisoning)
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
  assert 'error: budget 2.0 is outside (0, 1]' in proc.stderr
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
  from unlearnjax import report_poison_fails  # pylint: disable=g-import-not-at-top
  report_poison_fails.write_poison_fails_report(rows, str(tmp_path))
  for name in ('figure3.png', 'figure3.md', 'table2.png', 'table2.md'):
    assert os.path.getsize(tmp_path / name) > 0, name
