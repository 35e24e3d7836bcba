"""End to end: the corrective study on a seconds-long config."""

import os
import subprocess
import sys

import pytest

from unlearnjax import training
from unlearnjax.errors import ConfigError
from unlearnjax import sweep
from unlearnjax.studies import corrective

ROOT = os.path.join(os.path.dirname(__file__), '..')
sys.path.insert(0, os.path.join(ROOT, 'experiments'))
from configs import corrective as corrective_config  # pylint: disable=g-import-not-at-top,wrong-import-position

FIELDS = ('method', 'manipulation', 'dataset', 'model', 'found_fraction',
          'n_forget', 'n_manipulated', 'seed', 'hparams', 'acc_corr',
          'acc_retain', 'acc_manipulated_train', 'poison_healed',
          'model_damage', 'seconds')


def smoke_config(**changes):
  config = corrective_config.get_config('smoke')
  config.manipulations = ('badnet', 'ic')
  config.found_fractions = (1.0,)
  config.recipe.steps = 20
  config.budget_fraction = 0.2
  for name, value in changes.items():
    config[name] = value
  return config


@pytest.fixture(scope='module')
def study(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('corrective'))
  rows = corrective.run(smoke_config(), workdir)
  return workdir, rows


def test_one_row_per_run_with_the_required_fields(study):
  _, rows = study
  methods = smoke_config().methods
  assert {'ssd', 'ssd_exact', 'scrub'} <= set(methods)
  # 2 manipulations x (original + oracle + 2 fractions x the methods).
  assert len(rows) == 2 * (2 + 2 * len(methods))
  for row in rows:
    for field in FIELDS:
      assert field in row, field
  unlearned = [r for r in rows if r['method'] in methods]
  assert {r['method'] for r in unlearned} == set(methods)
  assert {r['n_forget'] for r in unlearned if r['one_shot']} == {1}
  for r in unlearned:
    assert r['n_forget'] >= 1 and 0 <= r['acc_corr'] <= 1
  # No silent defaults: every row names the settings it ran with.
  ssd_rows = {r['method']: r['hparams'] for r in unlearned if r['one_shot']}
  assert ssd_rows['ssd']['estimator'] == 'per_batch'
  assert ssd_rows['ssd']['shuffle'] is True
  assert ssd_rows['ssd_exact']['estimator'] == 'exact'


def test_oracle_trains_without_s_m(digits, tiny_model, tiny_recipe, tmp_path):
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from unlearnjax.manipulations import badnet  # pylint: disable=g-import-not-at-top
  train, _, test = digits
  manipulation = badnet.manipulate(train, test, seed=0, poison_fraction=0.05)
  images = manipulation.train.images.copy()
  images[manipulation.manipulated] = np.nan  # touching S_m gives NaNs
  variables, _ = sweep.trained_model(
      str(tmp_path), 'oracle', tiny_model, tiny_recipe,
      manipulation.train.replace(images=images), manipulation.clean_indices,
      jax.random.key(0), {})
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(variables))
  assert not set(manipulation.clean_indices) & set(manipulation.manipulated)


def test_reference_rows(study):
  _, rows = study
  for r in rows:
    if r['method'] == 'oracle' and r['acc_corr'] > 0:
      assert r['poison_healed'] == pytest.approx(100.0)
    if r['method'] == 'none':
      assert r['model_damage'] == 0.0 and r['found_fraction'] is None


def test_report_files_are_written(study):
  workdir, _ = study
  from unlearnjax.reports import corrective as report  # pylint: disable=g-import-not-at-top
  path = report.write_corrective_report(study[1], workdir)
  for name in ('figure2.png', 'figure2.md', 'table1.md', 'figure3.png',
               'figure3.md'):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  text = open(path).read()
  assert 'SSD' in text and 'Interclass confusion' in text


def test_rerun_skips_finished_runs(study, monkeypatch):
  workdir, rows = study

  def no_training(*args, **kwargs):
    raise AssertionError('a finished run was redone')

  monkeypatch.setattr(training, 'fit', no_training)
  again = corrective.run(smoke_config(), workdir)
  assert len(again) == len(rows)


def test_a_cut_line_is_rerun_and_nothing_else(study, tmp_path):
  workdir, rows = study
  import shutil  # pylint: disable=g-import-not-at-top
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  path = os.path.join(copy, 'results.jsonl')
  lines = open(path).read().splitlines()
  # Lose the last finished run and leave half a line, as a kill mid-write does.
  with open(path, 'w') as f:
    f.write('\n'.join(lines[:-1]) + '\n' + lines[-1][:40])
  with pytest.warns(UserWarning, match='unreadable'):
    again = corrective.run(smoke_config(), copy)
  assert len(again) == len(rows)
  assert {r['run_key'] for r in again} == {r['run_key'] for r in rows}


@pytest.mark.parametrize('changes,message', [
    ({'methods': ('ssd', 'amnesia')}, 'Unknown method'),
    ({'dataset': 'imagenet'}, 'Unknown dataset'),
    ({'found_fractions': (0.0, 0.5)}, r'outside \(0, 1\]'),
    ({'found_fractions': (1.5,)}, r'outside \(0, 1\]'),
    ({'manipulations': ('trojan',)}, 'Unknown manipulation'),
])
def test_bad_config_is_rejected_before_any_work(changes, message, tmp_path):
  with pytest.raises(ConfigError, match=message):
    corrective.run(smoke_config(**changes), str(tmp_path))
  assert not os.path.exists(tmp_path / 'results.jsonl')


def test_script_exits_non_zero_with_a_clear_message_and_keeps_results(
    study, tmp_path):
  workdir, rows = study
  import shutil  # pylint: disable=g-import-not-at-top
  copy = str(tmp_path / 'kept')
  shutil.copytree(workdir, copy)
  before = open(os.path.join(copy, 'results.jsonl')).read()
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'experiments', 'corrective.py'),
       f'--workdir={copy}',
       f'--config={ROOT}/experiments/configs/corrective.py:smoke',
       '--config.found_fractions=0.5,1.5'],
      capture_output=True, text=True, timeout=300,
      env={**os.environ, 'XLA_FLAGS': ''})
  assert proc.returncode != 0
  assert ('error: --config.found_fractions=0.5,1.5: found_fractions must be '
          'a number in (0, 1.0]') in proc.stderr
  assert 'Traceback' not in proc.stderr
  assert open(os.path.join(copy, 'results.jsonl')).read() == before
  assert len(before.splitlines()) == len(rows)


def test_same_config_and_seed_give_the_same_numbers(study, tmp_path):
  _, rows = study
  again = corrective.run(smoke_config(), str(tmp_path))
  strip = lambda r: {k: v for k, v in r.items()
                     if k not in ('seconds', 'seconds_per_config',
                                       'compile_seconds')}
  by_key = {r['run_key']: strip(r) for r in rows}
  assert {r['run_key']: strip(r) for r in again} == by_key


def test_study_runs_on_a_tfds_dataset_under_mock_data(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  config = smoke_config(dataset='mnist', manipulations=('badnet',),
                        methods=('ssd', 'finetune'), max_train=256,
                        max_test=64)
  with tfds.testing.mock_data(num_examples=256):
    rows = corrective.run(config, str(tmp_path))
  assert {r['dataset'] for r in rows} == {'mnist'}
  assert len(rows) == 2 + 2 * 2
  assert len({r['n_manipulated'] for r in rows}) == 1 and rows[0]['n_manipulated'] > 0
