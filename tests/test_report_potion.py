"""The Potion report from synthetic rows with known values."""

import json
import math
import os

import numpy as np

from unlearnjax.reports import potion as report_potion

MANIPULATIONS = ('badnet', 'sinusoid')
SIZES = (10, 50)
SEEDS = (0, 1)
FRACTIONS = (0.5, 1.0, 'one-shot')
BASE = {'ptn_xlf': 80.0, 'ptn_lf': 70.0, 'ptn_ssd': 60.0, 'ssd': 50.0,
        'retrain': 30.0}
RHOS = (0.1, 0.2, 0.5)


def _common(manipulation, size, seed):
  return {'study': 'potion', 'manipulation': manipulation,
          'dataset': 'digits', 'model': 'mlp', 'seed': seed,
          'n_manipulated': size, 'setting_key': f'{manipulation}-{size}'}


def _healed(method, manipulation, size, seed, fraction):
  value = BASE[method] + seed + (4.0 if size == 50 else 0.0)
  value += 10 * fraction if fraction != 'one-shot' else -20.0
  return value + (0.0 if manipulation == 'badnet' else 1.0)


def _damage(method, size, seed):
  return -0.5 * seed - (1.0 if size == 50 else 0.0) - (
      2.0 if method == 'ptn_lf' else 0.0)


def _method_row(method, manipulation, size, seed, fraction, part='main',
                rho=None):
  one_shot = fraction == 'one-shot'
  row = {**_common(manipulation, size, seed), 'part': part, 'method': method,
         'found_fraction': None if one_shot else fraction,
         'one_shot': one_shot, 'n_forget': 1 if one_shot else int(size * fraction),
         'hparams': {}, 'acc_corr': 0.5, 'acc_retain': 0.9,
         'acc_manipulated_train': 0.5,
         'poison_healed': _healed(method, manipulation, size, seed, fraction),
         'model_damage': _damage(method, size, seed),
         'original_acc_corr': 0.2, 'oracle_acc_corr': 0.95,
         'seconds': {'retrain': 60.0, 'ssd': 25.0}.get(method, 7.0)}
  if method == 'ssd':
    row.update(seconds_per_config=0.5, num_configs_tried=50)
  if method.startswith('ptn_'):
    row['hparams'] = {'over_forgetting_buffer': 0.2 if rho is None else rho}
    row.update(importance_train_seconds=3.0, importance_forget_seconds=1.0,
               search_seconds=2.0 if method == 'ptn_xlf' else 5.0,
               ptn_tries=12, ptn_percentile=99.0,
               ptn_selection_threshold=1.0, dampened_share=0.01,
               forget_accuracy=0.1, original_forget_accuracy=0.9,
               ptn_reached_threshold=True)
  if rho is not None:
    row['rho'] = rho
    row['poison_healed'] = 90.0 - 100 * abs(rho - 0.2) + seed
    row['model_damage'] = -10 * rho
  return row


def _reference_rows(method, manipulation, size, seed):
  return {**_common(manipulation, size, seed), 'part': 'main', 'method': method,
          'found_fraction': None, 'one_shot': False, 'n_forget': None,
          'hparams': {}, 'acc_corr': 0.2, 'acc_retain': 0.9,
          'acc_manipulated_train': 0.9,
          'poison_healed': 20.0 + seed if method == 'none' else 100.0,
          'model_damage': 0.0, 'original_acc_corr': 0.2,
          'oracle_acc_corr': 0.95, 'seconds': 40.0}


def _rows(with_methods=True, with_rho=True):
  rows = []
  for manipulation in MANIPULATIONS:
    for size in SIZES:
      for seed in SEEDS:
        rows += [_reference_rows(m, manipulation, size, seed)
                 for m in ('none', 'oracle')]
        if not with_methods:
          continue
        for fraction in FRACTIONS:
          rows += [_method_row(m, manipulation, size, seed, fraction)
                   for m in BASE]
          if with_rho and manipulation == 'badnet' and size == 50 and (
              fraction != 'one-shot'):
            rows += [_method_row(m, manipulation, size, seed, fraction, 'rho',
                                 rho)
                     for m in ('ptn_xlf', 'ptn_lf') for rho in RHOS]
  rows.append({'study': 'corrective', 'method': 'ssd', 'manipulation': 'ic'})
  return rows


def _read(path):
  with open(path) as f:
    return f.read()


def _table_line(text, heading, label):
  """The line of `label` in the first table after `heading`."""
  section = text[text.index(heading):]
  return next(line for line in section.splitlines()
              if line.startswith(f'| {label} |'))


def test_full_report(tmp_path):
  written = report_potion.write_potion_report(_rows(), str(tmp_path),
                                              timing_size=50)
  names = {os.path.basename(p) for p in written}
  assert names == {'table1.md', 'figure10.png', 'figure10.md',
                   'rho_sensitivity.png', 'rho_sensitivity.md', 'timing.png',
                   'timing.md', 'report.md'}
  for path in written:
    assert os.path.getsize(path) > 0

  table = _read(tmp_path / 'table1.md')
  # PTN+XLF on BadNet, found fractions: every size, fraction and seed.
  healed = [_healed('ptn_xlf', 'badnet', s, seed, f) for s in SIZES
            for seed in SEEDS for f in (0.5, 1.0)]
  assert healed == [85, 90, 86, 91, 89, 94, 90, 95]
  assert np.mean(healed) == 90.0
  expected = f'{np.mean(healed):.2f} ± {np.std(healed):.2f}'
  line = _table_line(table, '### BadNet', 'PTN+XLF')
  cells = [c.strip() for c in line.strip('|').split('|')]
  assert cells[1] == expected
  # Model damage, one-shot: -0.5·seed - 1 (size 50) -> [0, -0.5, -1, -1.5].
  assert cells[4] == f'{np.mean([0, -0.5, -1, -1.5]):.2f} ± ' \
                     f'{np.std([0, -0.5, -1, -1.5]):.2f}'
  # One-shot healing of PTN+XLF on the sinusoid: 80 + seed + 4·(50) - 20 + 1.
  one_shot = [61, 62, 65, 66]
  line = _table_line(table, '### Sinusoidal signal', 'PTN+XLF')
  assert f'{np.mean(one_shot):.2f} ± {np.std(one_shot):.2f}' in line
  # None: the original's poison healed (20 + seed) in both groups, damage 0.
  line = _table_line(table, '### BadNet', 'None (M_o)')
  assert line.count('20.50 ± 0.50') == 2
  assert line.count('0.00 ± 0.00') == 2
  assert 'PTN+XLF 8 / 4' in table  # n under the table
  # Table 1 order: PTN+XLF first, None last.
  section = table[table.index('### BadNet'):table.index('n (scenarios')]
  assert section.index('PTN+XLF') < section.index('EU (retrain)') < section.index(
      'None (M_o)')
  # The per-size table: PTN+XLF on BadNet at |S_m| = 10 -> [85, 90, 86, 91].
  assert f'{np.mean([85, 90, 86, 91]):.2f} ± {np.std([85, 90, 86, 91]):.2f} (n=4)' in table

  report = _read(tmp_path / 'report.md')
  assert report.index(table.splitlines()[0]) < report.index('figure10.png')
  for name in ('figure10.png', 'rho_sensitivity.png', 'timing.png'):
    assert name in report

  rho = _read(tmp_path / 'rho_sensitivity.md')
  for value in RHOS:
    assert f'| {value:g} |' in rho
  # ρ = 0.2, PTN+XLF: 90 + seed over 2 fractions x 2 seeds.
  assert '90.50 ± 0.50 (n=4)' in rho

  timing = _read(tmp_path / 'timing.md')
  # PTN+XLF total = 3 + 1 + 2 = 6 s; EU 60 s -> 10.0 %.
  line = _table_line(timing, '### digits/mlp', 'PTN+XLF total')
  assert '6.00 ± 0.00' in line and '10.0%' in line
  line = _table_line(timing, '### digits/mlp', 'PTN+LF total')
  assert '9.00 ± 0.00' in line and '15.0%' in line
  assert '| SSD single config | 0.50 ± 0.00 |' in timing
  assert 'JIT' in timing and 'cached' in timing
  assert '|S_m| = 50' in timing


def test_default_timing_size_and_nan(tmp_path):
  rows = _rows(with_rho=False)
  rows[5]['poison_healed'] = math.nan  # skipped in the means, not a crash
  written = report_potion.write_potion_report(rows, str(tmp_path))
  names = {os.path.basename(p) for p in written}
  assert 'rho_sensitivity.md' not in names
  assert not (tmp_path / 'rho_sensitivity.png').exists()
  assert '|S_m| = 10' in _read(tmp_path / 'timing.md')  # median of [10, 50]
  table = _read(tmp_path / 'table1.md')
  assert 'nan ±' not in table.lower() and '| nan' not in table.lower()
  # rows[5]: SSD, BadNet, |S_m| = 10, seed 0, fraction 0.5 (healed 55).
  assert rows[5]['method'] == 'ssd' and rows[5]['found_fraction'] == 0.5
  healed = [60, 56, 61, 59, 64, 60, 65]  # the other 7 found-fraction runs
  line = _table_line(table, '### BadNet', 'SSD (Goel grid)')
  assert f'{np.mean(healed):.2f} ± {np.std(healed):.2f}' in line
  assert 'SSD (Goel grid) 7 / 4 (1 NaN poison-healed values skipped)' in table


def test_only_reference_rows(tmp_path):
  rows = _rows(with_methods=False)
  written = report_potion.write_potion_report(rows, str(tmp_path))
  names = {os.path.basename(p) for p in written}
  assert {'table1.md', 'report.md'} <= names
  assert 'timing.md' not in names and 'rho_sensitivity.md' not in names
  assert '20.50 ± 0.50' in _read(tmp_path / 'table1.md')
  # No rows of the study at all.
  written = report_potion.write_potion_report([], str(tmp_path / 'empty'))
  assert os.path.exists(tmp_path / 'empty' / 'report.md')


def test_main_reads_results_file(tmp_path, capsys):
  # The CLI reads rows as the library writes them: each with a run key.
  with open(tmp_path / 'results.jsonl', 'w') as f:
    f.writelines(json.dumps({**row, 'run_key': f'k{i}'}) + '\n'
                 for i, row in enumerate(_rows()))
  report_potion.main(['--workdir', str(tmp_path), '--timing_size=50'])
  assert 'report.md' in capsys.readouterr().out
  assert '|S_m| = 50' in _read(tmp_path / 'timing.md')
