"""End to end: the PGU study (Hoang et al. 2024, §4) on a seconds-long config."""

import dataclasses
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from unlearnjax import representations, training
from unlearnjax.errors import ConfigError
from unlearnjax.studies import pgu as pgu_study
from unlearnjax.unlearn import pgu as pgu_lib
from unlearnjax.unlearn import registry

ROOT = os.path.join(os.path.dirname(__file__), '..')
_spec = importlib.util.spec_from_file_location(
    'pgu_config', os.path.join(ROOT, 'experiments', 'configs', 'pgu.py'))
pgu_config = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pgu_config)

COMMON_FIELDS = ('study', 'part', 'method', 'variant', 'dataset', 'model',
                 'seed', 'hparams', 'seconds', 'run_key', 'setting_key',
                 'diverged')
PART_FIELDS = {
    'removal': ('forget_accuracy', 'retain_accuracy', 'test_accuracy',
                'mia_auc', 'mia_roc_tpr', 'forget_entropy_mean',
                'forget_log_entropy_counts', 'n_forget'),
    'class_removal': ('forget_accuracy', 'class_test_accuracy',
                      'retain_test_accuracy', 'retain_test_accuracy_masked',
                      'class_test_prediction_counts',
                      'forget_log_entropy_counts'),
    'incremental': ('request', 'test_accuracy', 'retain_accuracy',
                    'forget_accuracy', 'removed_accuracy',
                    'forget_entropy_mean'),
    'depoison': ('flip_fraction', 'test_accuracy', 'forget_accuracy',
                 'forget_clean_accuracy', 'retain_accuracy', 'n_forget'),
}


def smoke_config(**changes):
  config = pgu_config.get_config('smoke')
  for name, value in changes.items():
    target, _, field = name.rpartition('.')
    (config[target] if target else config)[field] = value
  return config


@pytest.fixture(scope='module')
def study(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('pgu'))
  return workdir, pgu_study.run(smoke_config(), workdir)


def _part(rows, part):
  return [r for r in rows if r['part'] == part]


def test_rows_and_fields(study):
  _, rows = study
  # removal: M_o + retrain + PGU; class: M_o + PGU + finetune; incremental:
  # M_o + 2 requests x (PGU, retrain); depoison: 2 budgets x (M_o, M*,
  # PGU at two γ, finetune).
  assert {p: len(_part(rows, p)) for p in PART_FIELDS} == {
      'removal': 3, 'class_removal': 3, 'incremental': 5, 'depoison': 10}
  assert len({r['run_key'] for r in rows}) == len(rows)
  for row in rows:
    for field in COMMON_FIELDS + PART_FIELDS[row['part']]:
      assert field in row, (row['part'], row['method'], field)
    for field, value in row.items():
      if field.endswith('accuracy') and not np.isnan(value):
        assert 0 <= value <= 1, field
  for row in _part(rows, 'removal'):
    assert row['n_forget'] == 20
    assert sum(row['forget_log_entropy_counts']) == 20
    assert 0 <= row['mia_auc'] <= 1
    assert np.all(np.diff(row['mia_roc_tpr']) >= 0)   # TPR grows with FPR
  pgu_row, = [r for r in _part(rows, 'removal') if r['method'] == 'pgu']
  assert pgu_row['hparams']['batch_size'] == 32       # config.hparams.pgu
  assert 'method_pgu_stop_reason' in pgu_row
  # Every setting as used, the mode's defaults filled in (`unlearn.py`'s
  # entropy and k rule for forgetting, `depoisoning.py`'s below).
  used = pgu_row['method_pgu_hparams_used']
  assert (used['entropy_classes'], used['core_dimension_rule'],
          used['conv_patch_stride']) == ('all', 'count_at_most', 'unit')
  for row in _part(rows, 'depoison'):
    if row['method'] == 'pgu_depoison':
      used = row['method_pgu_hparams_used']
      assert (used['entropy_classes'], used['core_dimension_rule']) == (
          'non_label', 'count_below')
  class_pgu, = [r for r in _part(rows, 'class_removal')
                if r['method'] == 'pgu']
  assert class_pgu['stop_reference'] == 'chance'
  assert sum(class_pgu['class_test_prediction_counts']) > 0
  requests = sorted((r['method'], r['request'])
                    for r in _part(rows, 'incremental'))
  assert requests == [('none', 0), ('pgu', 1), ('pgu', 2), ('retrain', 1),
                      ('retrain', 2)]
  variants = sorted((r['flip_fraction'], r['variant'],
                     r['hparams']['energy_threshold'])
                    for r in _part(rows, 'depoison')
                    if r['method'] == 'pgu_depoison')
  assert variants == [(0.2, 'energy_threshold=0.8', 0.8),
                      (0.2, 'energy_threshold=0.9', 0.9),
                      (0.4, 'energy_threshold=0.8', 0.8),
                      (0.4, 'energy_threshold=0.9', 0.9)]


def test_incremental_requests_are_disjoint_and_class_balanced(digits):
  train, _, _ = digits
  requests = pgu_study.incremental_requests(train, 3, 25, seed=0)
  rows = np.concatenate(requests)
  assert rows.size == np.unique(rows).size == 75
  for request in requests:
    counts = np.bincount(train.labels[request], minlength=10)
    assert counts.sum() == 25 and counts.max() - counts.min() <= 1


def test_report_files_are_written(study):
  workdir, rows = study
  from unlearnjax.reports import pgu as report_pgu  # pylint: disable=g-import-not-at-top
  written = report_pgu.write_pgu_report(rows, workdir)
  for part in PART_FIELDS:
    for ext in ('png', 'md'):
      path = os.path.join(workdir, f'{part}.{ext}')
      assert path in written and os.path.getsize(path) > 0, path
  text = open(os.path.join(workdir, 'report.md')).read()
  for needle in ('MIA AUC', 'PGU (γ=0.8)', 'Poisoned (M_o)', 'Clean (M*)',
                 '40% flipped', 'Retrain', 'class logit removed'):
    assert needle in text, needle


def test_rerun_skips_finished_runs(study, monkeypatch):
  workdir, rows = study

  def no_work(*args, **kwargs):
    raise AssertionError('a finished run was redone')

  monkeypatch.setattr(training, 'fit', no_work)
  monkeypatch.setattr(pgu_study, '_unlearn', no_work)
  monkeypatch.setattr(representations, 'layer_covariances', no_work)
  again = pgu_study.run(smoke_config(), workdir)
  assert sorted(r['run_key'] for r in again) == sorted(
      r['run_key'] for r in rows)


def test_a_new_flip_budget_runs_only_the_new_runs(study, tmp_path):
  workdir, rows = study
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  again = pgu_study.run(
      smoke_config(parts=('depoison',),
                   **{'depoison.flip_fractions': (0.2, 0.4, 0.3)}), copy)
  old = {r['run_key']: r for r in _part(rows, 'depoison')}
  assert len(again) == len(old) + 5
  for row in again:
    if row['run_key'] in old:
      assert row['test_accuracy'] == old[row['run_key']]['test_accuracy']


@pytest.mark.parametrize('changes,message', [
    ({'parts': ('removal', 'magic')}, 'Unknown part'),
    ({'removal.methods': ('pgu', 'magic')}, 'Unknown method'),
    ({'depoison.flip_fractions': (0.0, 0.2)}, r'outside \(0, 1\]'),
    ({'depoison.class_pairs': 'cats'}, 'class_pairs'),
    ({'class_removal.stop_reference': 'never'}, 'stop_reference'),
    ({'class_removal.forget_class': 12}, 'not a class'),
    ({'removal.num_forget': 5000}, 'leaves nothing'),
    ({'incremental.request_size': 400}, 'smallest class'),
    ({'removal.mia_models': -1}, 'mia_models'),
    ({'seeds': ()}, 'seeds'),
])
def test_bad_config_is_rejected_before_any_work(changes, message, tmp_path,
                                                monkeypatch):
  monkeypatch.setattr(training, 'fit', lambda *a, **k: pytest.fail('trained'))
  with pytest.raises(ConfigError, match=message):
    pgu_study.run(smoke_config(**changes), str(tmp_path))
  assert not os.path.exists(tmp_path / 'results.jsonl')


def test_bad_hparams_are_rejected(tmp_path):
  config = smoke_config()
  config.hparams.pgu.gamma = 0.9
  with pytest.raises(ConfigError, match='config.hparams.pgu has no field '
                     'gamma; valid: mode, '):
    pgu_study.run(config, str(tmp_path))
  config = smoke_config()
  config.sweeps.pgu = {'gamma': (0.9,)}
  with pytest.raises(ConfigError, match='config.sweeps.pgu has unknown '
                     'fields'):
    pgu_study.run(config, str(tmp_path))
  config = smoke_config()
  config.sweeps.pgu_depoison.energy_threshold = (0.9, 1.5)
  with pytest.raises(ConfigError, match='energy_threshold'):
    pgu_study.run(config, str(tmp_path))


def test_script_exits_non_zero_with_a_clear_message(tmp_path):
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'experiments', 'pgu.py'),
       f'--workdir={tmp_path}',
       f'--config={ROOT}/experiments/configs/pgu.py:smoke',
       '--config.depoison.flip_fractions=0.1,2.0'],
      capture_output=True, text=True, timeout=300,
      env={**os.environ, 'XLA_FLAGS': ''})
  assert proc.returncode != 0
  assert ('error: --config.depoison.flip_fractions=0.1,2.0: '
          'depoison.flip_fractions must be a number in (0, 1.0]') in proc.stderr
  assert 'Traceback' not in proc.stderr


def test_every_named_config_loads():
  for name in ('default', 'smoke', 'cifar10'):
    pgu_study.validate_config(pgu_config.get_config(name))
  with pytest.raises(ValueError, match='Unknown config'):
    pgu_config.get_config('imagenet')


def _copy(workdir, tmp_path):
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  return copy


MEASURED = ('test_accuracy', 'retain_accuracy', 'forget_accuracy',
            'removed_accuracy', 'forget_entropy_mean', 'n_removed',
            'forget_log_entropy_counts')


def test_a_kill_mid_chain_recomputes_what_the_next_request_builds_on(
    study, tmp_path, monkeypatch):
  """§4.4's chains are a run per request: with request 2's rows lost (a
  kill after request 1), the rerun serves request 1 again, unrecorded, and
  request 2 from its result: the same numbers as the uninterrupted run."""
  workdir, rows = study
  copy = _copy(workdir, tmp_path)
  lost = {r['run_key']: r for r in _part(rows, 'incremental')
          if r['request'] == 2}
  path = os.path.join(copy, 'results.jsonl')
  kept = [line for line in open(path)
          if json.loads(line)['run_key'] not in lost]
  with open(path, 'w') as f:
    f.writelines(kept)
  served = []
  serve = pgu_lib.unlearn_request

  def counting(model, state, forget, *args, **kwargs):
    served.append(state.requests + 1)
    return serve(model, state, forget, *args, **kwargs)

  monkeypatch.setattr(pgu_lib, 'unlearn_request', counting)
  again = pgu_study.run(smoke_config(), copy)
  assert served == [1, 2]
  assert len(again) == len(rows)
  redone = {r['run_key']: r for r in again if r['run_key'] in lost}
  assert sorted(redone) == sorted(lost)
  for key, row in redone.items():
    for field in MEASURED:
      assert row[field] == lost[key][field], (row['method'], field)
  assert len(open(path).readlines()) == len(rows)   # request 1 not re-added


def test_a_diverging_method_is_a_row_and_the_sweep_goes_on(study, tmp_path,
                                                           monkeypatch):
  workdir, rows = study
  copy = _copy(workdir, tmp_path)
  finetune = registry.get_method('finetune')

  def diverge(task, hparams, key):
    raise FloatingPointError('loss is nan at step 3')

  monkeypatch.setitem(registry.METHODS, 'finetune',
                      dataclasses.replace(finetune, unlearn=diverge))
  config = smoke_config(
      parts=('removal', 'incremental'),
      **{'removal.methods': ('retrain', 'pgu', 'finetune'),
         'incremental.methods': ('pgu', 'retrain', 'finetune')})
  again = pgu_study.run(config, copy)
  diverged = [r for r in again if r['diverged']]
  assert sorted((r['part'], r.get('request')) for r in diverged) == [
      ('incremental', 1), ('incremental', 2), ('removal', None)]
  for row in diverged:
    assert row['method'] == 'finetune' and row['seed'] == 0
    assert row['variant'] is None and 'run_key' in row
    assert 'loss is nan at step 3' in row['error']
  second, = [r for r in diverged if r.get('request') == 2]
  assert 'an earlier request of this chain diverged (request 1' in (
      second['error'])
  # Every other run finished, with the numbers it had.
  old = {r['run_key']: r for r in rows}
  finished = [r for r in again if not r['diverged']]
  assert len(finished) == 3 + 5
  for row in finished:
    assert row['test_accuracy'] == old[row['run_key']]['test_accuracy']


def test_class_removal_settings_go_to_the_methods_that_have_the_fields():
  pgu = pgu_study.class_removal_hparams(pgu_lib.PGUHparams(), 'chance')
  assert (pgu.forget_target, pgu.core_dimension_rule) == (
      'chance', 'count_at_most_plus_one')
  named = pgu_study.class_removal_hparams(
      pgu_lib.PGUHparams(core_dimension_rule='first_reaching'), 'validation')
  assert (named.forget_target, named.core_dimension_rule) == (
      'validation', 'first_reaching')
  finetune = registry.get_method('finetune').hparams()
  assert pgu_study.class_removal_hparams(finetune, 'chance') == finetune
  assert [n for n in registry.METHODS
          if pgu_study.serves_from_incremental_cache(n)] == [
              'pgu', 'pgu_depoison']


def _script(tmp_path, *flags_):
  return subprocess.run(
      [sys.executable, os.path.join(ROOT, 'experiments', 'pgu.py'),
       f'--workdir={tmp_path}',
       f'--config={ROOT}/experiments/configs/pgu.py:smoke', *flags_],
      capture_output=True, text=True, timeout=600,
      env={**os.environ, 'XLA_FLAGS': ''})


def test_documented_hparams_overrides_work_through_the_script(tmp_path):
  documented = re.findall(r'--config\.hparams\.(\w+)\.(\w+)=(\S+)',
                          pgu_config.__doc__)
  assert ('pgu', 'energy_threshold', '0.95') in documented
  proc = _script(tmp_path, '--config.parts=removal',
                 '--config.removal.methods=pgu',
                 '--config.removal.mia_models=0',
                 *[f'--config.hparams.{m}.{f}={v}' for m, f, v in documented])
  assert proc.returncode == 0, proc.stderr[-3000:]
  from unlearnjax import results  # pylint: disable=g-import-not-at-top
  row, = [r for r in results.read_rows(str(tmp_path))
          if r['method'] == 'pgu']
  for method, field, value in documented:
    assert method == 'pgu'
    assert str(row['hparams'][field]) == value, field
  assert row['hparams']['batch_size'] == 32       # the config's own setting
  assert os.path.exists(tmp_path / 'report.md')


@pytest.mark.parametrize('flag,message', [
    ('--config.hparams.pgu.gamma=0.9',
     "config.hparams.pgu has no field 'gamma'; valid: batch_size, "),
    ('--config.hparams.pgux.batch_size=3',
     "config.hparams has no field 'pgux'; valid: "),
    ('--config.hparams.pgu.energy_threshold=high', 'could not convert'),
])
def test_a_wrong_hparams_override_is_a_one_line_error(tmp_path, flag,
                                                      message):
  proc = _script(tmp_path, flag)
  assert proc.returncode == 1
  assert message in proc.stderr
  assert len(proc.stderr.strip().splitlines()) <= 2, proc.stderr
  assert 'Traceback' not in proc.stderr
  assert not os.path.exists(tmp_path / 'results.jsonl')
