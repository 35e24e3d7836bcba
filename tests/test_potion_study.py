"""End to end: the Potion study on a seconds-long config."""

import importlib.util
import os
import subprocess
import sys

import pytest

from unlearnjax import importance, training
from unlearnjax.errors import ConfigError
from unlearnjax.studies import potion

ROOT = os.path.join(os.path.dirname(__file__), '..')
_spec = importlib.util.spec_from_file_location(
    'potion_config', os.path.join(ROOT, 'experiments', 'configs', 'potion.py'))
potion_config = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(potion_config)

FIELDS = ('method', 'manipulation', 'dataset', 'model', 'seed', 'hparams',
          'seconds', 'n_manipulated', 'found_fraction', 'one_shot',
          'poison_healed', 'model_damage', 'acc_corr', 'acc_retain', 'part')


def smoke_config(**changes):
  config = potion_config.get_config('smoke')
  config.recipe.steps = 20
  config.found_fractions = (1.0,)
  for name, value in changes.items():
    config[name] = value
  return config


@pytest.fixture(scope='module')
def study(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('potion'))
  return workdir, potion.run(smoke_config(), workdir)


def test_one_row_per_run(study):
  _, rows = study
  # 2 manipulations x 2 sizes x (M_o + M* + (1.0, one-shot) x 3 methods)
  # + ρ rows: BadNet, |S_m| = 16, fraction 1.0, ptn_xlf, 2 values of ρ.
  assert len(rows) == 2 * 2 * (2 + 2 * 3) + 2
  for row in rows:
    for field in FIELDS:
      assert field in row, field
  assert {r['n_manipulated'] for r in rows} == {8, 16}
  assert {r['manipulation'] for r in rows} == {'badnet', 'moving'}
  rho_rows = [r for r in rows if r['part'] == 'rho']
  assert sorted(r['rho'] for r in rho_rows) == [0.1, 0.5]
  assert all(r['hparams']['over_forgetting_buffer'] == r['rho']
             for r in rho_rows)
  for row in rows:
    if row['method'] == 'ptn_xlf':
      assert row['hparams']['importance'] == 'xlf'
      for field in ('importance_train_seconds', 'importance_forget_seconds',
                    'search_seconds', 'ptn_tries', 'ptn_percentile'):
        assert row[field] >= 0, field


def test_report_files_are_written(study):
  workdir, rows = study
  from unlearnjax.reports import potion as report_potion  # pylint: disable=g-import-not-at-top
  report_potion.write_potion_report(rows, workdir)
  for name in ('table1.md', 'figure10.png', 'rho_sensitivity.png',
               'rho_sensitivity.md', 'timing.png', 'timing.md', 'report.md'):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  text = open(os.path.join(workdir, 'table1.md')).read()
  assert 'PTN+XLF' in text and 'Moving trigger' in text


def test_rerun_skips_finished_runs(study, monkeypatch):
  workdir, rows = study

  def no_work(*args, **kwargs):
    raise AssertionError('a finished run was redone')

  monkeypatch.setattr(training, 'fit', no_work)
  monkeypatch.setattr(importance, 'parameter_importance', no_work)
  assert len(potion.run(smoke_config(), workdir)) == len(rows)


def test_a_new_rho_runs_only_the_new_runs(study, tmp_path):
  workdir, rows = study
  import shutil  # pylint: disable=g-import-not-at-top
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  config = smoke_config()
  config.rho_sensitivity.rhos = (0.1, 0.5, 0.3)
  again = potion.run(config, copy)
  assert len(again) == len(rows) + 1
  lines = open(os.path.join(copy, 'results.jsonl')).read().splitlines()
  assert len(lines) == len(rows) + 1


@pytest.mark.parametrize('changes,message', [
    ({'sizes': (0, 10)}, 'positive integer'),
    ({'methods': ('ptn_xlf', 'ptn_magic')}, 'Unknown method'),
    ({'found_fractions': (0.0,)}, r'outside \(0, 1\]'),
])
def test_bad_config_is_rejected_before_any_work(changes, message, tmp_path):
  with pytest.raises(ConfigError, match=message):
    potion.run(smoke_config(**changes), str(tmp_path))
  assert not os.path.exists(tmp_path / 'results.jsonl')


def test_bad_rho_settings_are_rejected(tmp_path):
  config = smoke_config()
  config.rho_sensitivity.rhos = (0.2, 1.5)
  with pytest.raises(ConfigError, match='outside'):
    potion.run(config, str(tmp_path))
  config = smoke_config()
  config.rho_sensitivity.methods = ('ssd',)
  with pytest.raises(ConfigError, match='not a PTN method'):
    potion.run(config, str(tmp_path))


def test_script_exits_non_zero_with_a_clear_message(tmp_path):
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'experiments', 'potion.py'),
       f'--workdir={tmp_path}',
       f'--config={ROOT}/experiments/configs/potion.py:smoke',
       '--config.sizes=8,0'],
      capture_output=True, text=True, timeout=300,
      env={**os.environ, 'XLA_FLAGS': ''})
  assert proc.returncode != 0
  assert ('error: --config.sizes=8,0: sizes must be a whole number >= 1'
          in proc.stderr)
  assert 'Traceback' not in proc.stderr


def test_every_named_config_loads():
  for name in ('default', 'digits_2seeds', 'vit', 'smoke', 'cifar10',
               'cifar100'):
    config = potion_config.get_config(name)
    potion.validate_config(config)
  with pytest.raises(ValueError, match='Unknown config'):
    potion_config.get_config('imagenet')
