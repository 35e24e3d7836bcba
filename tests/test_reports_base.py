"""The report base every study's report builds on (unlearnjax/reports/base.py)."""

import json
import math
import os

import numpy as np
import pytest

from unlearnjax.reports import base
from unlearnjax.unlearn.registry import METHODS


def _png(path):
  with open(path, 'rb') as f:
    return f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_mean_std_skips_none_and_nan():
  values = [1.0, None, 3.0, math.nan, 'n/a']
  assert base.finite(values) == [1.0, 3.0]
  assert base.count(values) == 2
  assert base.mean_std(values) == (2.0, 1.0)  # population std
  assert all(math.isnan(v) for v in base.mean_std([None, math.nan]))
  assert base.fmt(0.1234, 0.01, scale=100, digits=2) == '12.34 ± 1.00'
  assert base.fmt(0.5) == '0.5'
  assert base.fmt(math.nan, 1.0) == '–'
  assert base.cell([0.2, 0.4], 100) == '30.0 ± 10.0'
  assert base.cell([]) == '–'
  mean, std = base.curve([[1.0, 3.0], [2.0], []], scale=10)
  np.testing.assert_allclose(mean[:2], [20.0, 20.0])
  assert math.isnan(mean[2])
  np.testing.assert_allclose(std, [10.0, 0.0, 0.0])  # no spread drawn as 0


def test_table_shows_the_seed_count():
  rows = [{'method': 'a', 'seed': s, 'x': s} for s in (0, 1, 2)]
  rows.append({'method': 'b', 'seed': 0, 'x': 5})
  assert base.seeds(rows) == [0, 1, 2]
  assert base.seed_count(rows) == 'n = 3 seeds'
  assert base.seed_count(rows[:1]) == 'n = 1 seed'
  # Counted per table line: a method with fewer seeds shows as a range.
  by = lambda r: r['method']
  assert base.seed_count(rows, by=by) == 'n = 1–3 seeds'
  assert base.seed_count(rows[:3], by=by) == 'n = 3 seeds'
  lines = [[m, base.cell([r['x'] for r in rows if r['method'] == m])]
           for m in ('a', 'b')]
  text = base.table(['method', 'x'], lines, n=base.seed_count(rows, by=by))
  assert text.splitlines() == ['| method (n = 1–3 seeds) | x |', '|---|---|',
                               '| a | 1.0 ± 0.8 |', '| b | 5.0 ± 0.0 |']
  assert base.table(['m', 'x'], []).splitlines()[0] == '| m | x |'


def test_order_helpers():
  assert base.ordered({'z', 'b', 'a', 'y'}, ('b', 'a', 'q')) == ['b', 'a',
                                                                 'y', 'z']
  rows = [{'method': m} for m in ('none', 'gd', 'oracle', 'ngd', 'gd')]
  assert base.first_seen(rows, exclude=('none', 'oracle')) == ['gd', 'ngd']
  rows = [{'method': 'ssd', 'found_fraction': f, 'one_shot': o, 'v': v}
          for f, o, v in ((0.5, False, 1), (1.0, False, 2), (0.5, False, 3),
                          (None, True, 4))]
  rows.append({'method': 'none', 'found_fraction': None, 'v': 9})
  assert base.found_fraction_columns(rows) == ['one-shot', 0.5, 1.0]
  series = base.by_found_fraction(rows, 'ssd', lambda r: r['v'])
  assert dict(series) == {0.5: [1, 3], 1.0: [2], 'one-shot': [4]}


def test_labels_come_from_the_registry():
  assert all(method.label for method in METHODS.values())
  labels = base.Labels({'none': 'Original (M_o)', 'retrain': 'RewoD'})
  assert labels('ssd') == METHODS['ssd'].label == 'SSD'
  assert labels('ptn_xlf') == 'PTN+XLF'
  assert labels('retrain') == 'RewoD'          # a paper's own name wins
  assert METHODS['retrain'].label == 'Retrain'
  assert labels('none') == 'Original (M_o)'    # not a method
  assert labels('no_such_method') == 'no_such_method'
  assert base.method_label('neggrad_plus') == 'NegGrad+'


def test_study_reports_name_methods_as_their_papers_do():
  from unlearnjax.reports import corrective, pgu, poison_fails, potion, reload  # pylint: disable=g-import-not-at-top
  assert corrective.LABELS('finetune') == 'CF'
  assert corrective.LABELS('bad_teacher') == 'BadT'
  assert potion.LABELS('retrain') == 'EU (retrain)'
  assert potion.LABELS('ptn_lf') == 'PTN+LF'
  assert poison_fails.LABELS('gradient_ascent') == 'GA'
  assert reload.LABELS('finetune') == 'FT'
  assert reload.LABELS('fisher_forgetting') == 'Fisher'
  assert pgu.LABELS('pgu_depoison') == 'PGU'
  assert pgu.LABELS('finetune') == 'Finetune'


def test_figure_writes_png_and_markdown_twin(tmp_path):
  fig, ax = base.subplots()
  ax.plot([0, 1], [2, 3])
  table = base.table(['x', 'y'], [[0, 2], [1, 3]])
  written = base.save_figure(fig, str(tmp_path / 'line.png'), table)
  assert written == [str(tmp_path / 'line.png'), str(tmp_path / 'line.md')]
  assert _png(tmp_path / 'line.png')
  assert (tmp_path / 'line.md').read_text() == table + '\n'
  # Without a table there is no twin.
  fig, _ = base.subplots()
  assert base.save_figure(fig, str(tmp_path / 'bare.png')) == [
      str(tmp_path / 'bare.png')]
  assert not (tmp_path / 'bare.md').exists()


def test_report_collects_sections_and_files(tmp_path):
  workdir = str(tmp_path / 'out')
  report = base.Report(workdir, 'A study', 'Some intro.', '')
  fig, ax = base.subplots()
  ax.bar([0, 1], [1, 2])
  table = base.table(['bar', 'height'], [[0, 1], [1, 2]])
  report.section('Figure 1: bars', 'What it shows.', '')
  assert report.figure('figure1', fig, table) == os.path.join(workdir,
                                                              'figure1.png')
  report.image('figure1.png', 'Figure 1')
  report.add(table, '')
  # A twin without a figure (nothing to draw) is still written; no PNG.
  assert report.figure('figure2', None, 'No rows yet.') is None
  report.write('table1.md', 'a table\n\n\n')
  path = report.save()
  assert path == os.path.join(workdir, 'report.md')
  assert [os.path.basename(p) for p in report.written] == [
      'figure1.png', 'figure1.md', 'figure2.md', 'table1.md', 'report.md']
  text = open(path).read()
  assert text.startswith('# A study\n\nSome intro.\n\n## Figure 1: bars\n\n')
  assert '![Figure 1](figure1.png)\n\n| bar | height |' in text
  assert text.endswith('| 1 | 2 |\n')                   # one final newline
  assert open(os.path.join(workdir, 'table1.md')).read() == 'a table\n'
  assert not os.path.exists(os.path.join(workdir, 'figure2.png'))


def _write_rows(path, rows):
  with open(path, 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in rows)


def test_rebuild_main_merges_shards_without_diverged_rows(tmp_path, capsys):
  rows = [{'run_key': f'k{i}', 'seed': i} for i in range(4)]
  _write_rows(tmp_path / 'results.jsonl', rows[:2])
  # A worker's shard: two new rows, one already in results.jsonl, one diverged.
  _write_rows(tmp_path / 'results-worker1.jsonl',
              rows[2:] + [{'run_key': 'k0', 'seed': 99},
                          {'run_key': 'k9', 'seed': 9, 'diverged': True}])
  seen = {}

  def write_fn(got, workdir, size=None):
    seen.update(rows=got, workdir=workdir, size=size)
    return [os.path.join(workdir, 'a.md'), os.path.join(workdir, 'b.png')]

  main = base.cli(write_fn, 'usage', options={'size': dict(type=int)})
  main(['--workdir', str(tmp_path), '--size=5'])
  assert sorted(r['run_key'] for r in seen['rows']) == ['k0', 'k1', 'k2', 'k3']
  assert {r['seed'] for r in seen['rows']} == {0, 1, 2, 3}  # first row wins
  assert seen['workdir'] == str(tmp_path) and seen['size'] == 5
  assert capsys.readouterr().out.split() == [str(tmp_path / 'a.md'),
                                             str(tmp_path / 'b.png')]
  # A write_fn returning one path (the corrective report) prints it.
  base.rebuild_main(lambda rows, workdir: 'report.md', ['--workdir',
                                                        str(tmp_path)])
  assert capsys.readouterr().out == 'report.md\n'


def _corrective_rows():
  rows = []
  for seed in (0, 1):
    common = {'study': 'corrective', 'dataset': 'digits', 'seed': seed,
              'manipulation': 'badnet', 'setting_key': 's', 'one_shot': False}
    rows.append({**common, 'method': 'none', 'found_fraction': None,
                 'acc_corr': 0.2, 'acc_retain': 0.9, 'model_damage': 0.0})
    for fraction in (0.5, 1.0):
      rows.append({**common, 'method': 'retrain', 'found_fraction': fraction,
                   'acc_corr': 0.5 + 0.1 * seed, 'acc_retain': 0.9,
                   'model_damage': -0.5 * seed})
  return [{**r, 'run_key': f'k{i}'} for i, r in enumerate(rows)]


def test_corrective_cli_rebuilds_from_two_shards(tmp_path, capsys):
  from unlearnjax.reports import corrective  # pylint: disable=g-import-not-at-top
  # `python -m unlearnjax.reports.corrective --workdir=DIR` over two shards.
  rows = _corrective_rows()
  _write_rows(tmp_path / 'results.jsonl', rows[:3])
  _write_rows(tmp_path / 'results-worker0.jsonl', rows[3:])
  corrective.main(['--workdir', str(tmp_path)])
  assert capsys.readouterr().out.strip() == str(tmp_path / 'report.md')
  text = (tmp_path / 'report.md').read_text()
  assert '| method (n = 2 seeds) | 0.5 | 1.0 |' in text
  assert '| RewoD | 55.0 ± 5.0 | 55.0 ± 5.0 |' in text
  assert _png(tmp_path / 'figure2.png')
  assert (tmp_path / 'figure2.md').read_text() in text


@pytest.mark.parametrize('module', ['corrective', 'potion', 'poison_fails',
                                    'reload', 'pgu'])
def test_no_rows_no_crash(tmp_path, module):
  import importlib  # pylint: disable=g-import-not-at-top
  mod = importlib.import_module(f'unlearnjax.reports.{module}')
  write = next(getattr(mod, n) for n in dir(mod)
               if n.startswith('write_') and n.endswith('_report'))
  write([], str(tmp_path))
  assert (tmp_path / 'report.md').exists()
