"""Figures (matplotlib, PNG) and Markdown tables from a results file.

Everything here reads only the rows of `results.jsonl` (and the saved SSD
ratio files), so every figure can be regenerated with
`python -m unlearnjax.report --workdir=DIR`.
"""

from __future__ import annotations

import collections
import glob
import math
import os

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

METHOD_LABELS = {'none': 'None (original)', 'oracle': 'Oracle M*',
                 'retrain': 'RewoD', 'finetune': 'CF', 'ssd': 'SSD',
                 'ssd_exact': 'SSD (exact importances)',
                 'bad_teacher': 'BadT', 'scrub': 'SCRUB'}
MANIPULATION_LABELS = {'badnet': 'BadNet poisoning', 'ic': 'Interclass confusion'}


def _label(method):
  return METHOD_LABELS.get(method, method)


def _mean_std(values):
  values = [v for v in values if v is not None and not math.isnan(v)]
  if not values:
    return math.nan, math.nan
  return float(np.mean(values)), float(np.std(values))


def _fmt(mean, std=None, scale=1.0, digits=1):
  if math.isnan(mean):
    return '–'
  if std is None or math.isnan(std):
    return f'{mean * scale:.{digits}f}'
  return f'{mean * scale:.{digits}f} ± {std * scale:.{digits}f}'


def _groups(rows):
  """(dataset, manipulation) -> rows of the corrective study.

  Rows of several settings (e.g. two poison sizes) of one (dataset,
  manipulation) are kept apart: the dataset label gets the setting key.
  """
  settings = collections.defaultdict(set)
  for row in rows:
    settings[(row['dataset'], row['manipulation'])].add(row.get('setting_key'))
  groups = collections.defaultdict(list)
  for row in rows:
    if row.get('study', 'corrective') == 'corrective':
      dataset = row['dataset']
      if len(settings[(dataset, row['manipulation'])]) > 1:
        dataset = f'{dataset} {row.get("setting_key", "")[:6]}'
      groups[(dataset, row['manipulation'])].append(row)
  return dict(sorted(groups.items()))


def _methods(rows):
  order = list(METHOD_LABELS)
  found = {r['method'] for r in rows} - {'none', 'oracle'}
  return [m for m in order if m in found] + sorted(found - set(order))


def _series(rows, method, metric):
  """fraction -> list of values over seeds ('one-shot' for one-shot rows)."""
  series = collections.defaultdict(list)
  for r in rows:
    if r['method'] == method:
      x = 'one-shot' if r.get('one_shot') else r['found_fraction']
      series[x].append(r[metric])
  return series


def figure2(rows, path):
  """Goel Fig. 2: Acc_corr against the found fraction, per method."""
  groups = _groups(rows)
  if not groups:
    return None
  fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.2),
                           squeeze=False)
  for ax, ((dataset, manipulation), group) in zip(axes[0], groups.items()):
    for method in _methods(group):
      series = _series(group, method, 'acc_corr')
      xs = sorted(x for x in series if x != 'one-shot')
      means = [100 * np.mean(series[x]) for x in xs]
      stds = [100 * np.std(series[x]) for x in xs]
      line = ax.errorbar(xs, means, yerr=stds, marker='o', ms=3, capsize=2,
                         label=_label(method))
      if 'one-shot' in series:
        ax.errorbar([0.0], [100 * np.mean(series['one-shot'])],
                    yerr=[100 * np.std(series['one-shot'])], marker='*',
                    ms=8, color=line[0].get_color(), capsize=2)
    for method, style in (('none', 'k--'), ('oracle', 'k:')):
      values = [r['acc_corr'] for r in group if r['method'] == method]
      if values:
        ax.axhline(100 * np.mean(values), ls=style[1:], color='k',
                   label=_label(method))
    ax.set_xlabel('found fraction |S_f|/|S_m|  (★ at 0: one sample)')
    ax.set_ylabel('Acc_corr (%)')
    ax.set_title(f'{MANIPULATION_LABELS.get(manipulation, manipulation)} '
                 f'({dataset})')
    ax.set_xlim(-0.05, 1.05)
    ax.grid(alpha=0.3)
  axes[0][-1].legend(fontsize=8, loc='best')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def figure2_table(rows) -> str:
  """The numbers behind Fig. 2: Acc_corr (%) mean ± std over seeds."""
  out = []
  for (dataset, manipulation), group in _groups(rows).items():
    fractions = sorted({r['found_fraction'] for r in group
                        if r['found_fraction'] is not None})
    has_one_shot = any(r.get('one_shot') for r in group)
    columns = (['one-shot'] if has_one_shot else []) + fractions
    seeds = sorted({r['seed'] for r in group})
    out.append(f'**{MANIPULATION_LABELS.get(manipulation, manipulation)}, '
               f'{dataset}** — Acc_corr (%), mean ± std over seeds {seeds}\n')
    out.append('| method | ' + ' | '.join(str(c) for c in columns) + ' |')
    out.append('|---|' + '---|' * len(columns))
    for method in ('none', 'oracle'):
      mean, std = _mean_std([r['acc_corr'] for r in group
                             if r['method'] == method])
      if not math.isnan(mean):
        out.append(f'| {_label(method)} | ' + ' | '.join(
            [_fmt(mean, std, 100)] * len(columns)) + ' |')
    for method in _methods(group):
      series = _series(group, method, 'acc_corr')
      cells = [_fmt(*_mean_std(series.get(c, [])), 100) for c in columns]
      out.append(f'| {_label(method)} | ' + ' | '.join(cells) + ' |')
    out.append('')
  return '\n'.join(out)


def table1(rows) -> str:
  """Goel Tab. 1: change in Acc_retain (points) per method, mean ± std over
  the found fractions 0.1 … 1.0 (seeds averaged first)."""
  groups = _groups(rows)
  if not groups:
    return ''
  columns = list(groups)
  methods = []
  for group in groups.values():
    methods += [m for m in _methods(group) if m not in methods]
  header = '| method | ' + ' | '.join(
      f'{MANIPULATION_LABELS.get(m, m)} ({d})' for d, m in columns) + ' |'
  out = ['Change in Acc_retain (percentage points) after unlearning, mean ± '
         'std over found fractions 0.1 … 1.0 (each the mean over seeds); '
         'higher is better. "None" shows the original Acc_retain (%).', '',
         header, '|---|' + '---|' * len(columns)]
  cells = []
  for group in groups.values():
    cells.append(_fmt(*_mean_std([100 * r['acc_retain'] for r in group
                                  if r['method'] == 'none'])))
  out.append('| None (original) | ' + ' | '.join(cells) + ' |')
  for method in methods:
    cells = []
    for group in groups.values():
      series = _series(group, method, 'model_damage')
      per_fraction = [np.mean(v) for x, v in series.items() if x != 'one-shot']
      cells.append(_fmt(*_mean_std(per_fraction), digits=2))
    out.append(f'| {_label(method)} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(out) + '\n'


def _ratio_files(workdir, setting_keys):
  files = collections.defaultdict(list)
  for path in sorted(glob.glob(os.path.join(workdir, 'ssd_ratios', '*.npz'))):
    with np.load(path) as f:
      if 'setting_key' in f and str(f['setting_key']) not in setting_keys:
        continue  # another setting's ratios
      bound = (float(f['n_train']) / float(f['n_forget'])
               if 'n_train' in f and str(f['importance_data']) == 'train'
               else math.nan)
      files[str(f['manipulation'])].append((f['ratios'], bound))
  return files


def figure3(workdir, path, setting_keys=None):
  """Goel Fig. 3: histogram of SSD's importance ratio I_f/I_D (S_f = S_m).

  With I_D over the whole training set (which holds S_f), every ratio is at
  most |S_tr|/|S_f| (I_D >= |S_f|/|S_tr| * I_f); the bound is drawn and
  tabulated, since it differs between manipulations of different sizes.
  """
  files = _ratio_files(workdir, setting_keys or set())
  if not files:
    return None, ''
  fig, axes = plt.subplots(1, len(files), figsize=(5.5 * len(files), 3.8),
                           squeeze=False)
  bounded = any(not math.isnan(b) for entries in files.values()
                for _, b in entries)
  lines = ['SSD importance ratio I_f/I_D over all parameters, S_f = S_m '
           '(Goel Fig. 3); pooled over seeds.'
           + (' With I_D over the whole training set no ratio can exceed '
              '|S_tr|/|S_f| (the bound).' if bounded else ''), '',
           '| manipulation | parameters | median | 99th pct | 99.9th pct | max |'
           + (' bound (train size / forget size) | parameters above half the '
              'bound |' if bounded else ''),
           '|---|---|---|---|---|---|' + ('---|---|' if bounded else '')]
  for ax, (manipulation, entries) in zip(axes[0], sorted(files.items())):
    ratios = np.concatenate([r for r, _ in entries])
    bound = float(np.mean([b for _, b in entries]))
    ax.hist(ratios, bins=100, log=True, color='tab:blue')
    if not math.isnan(bound):
      ax.axvline(bound, color='k', ls='--', lw=1, label='bound |S_tr|/|S_f|')
      ax.legend(fontsize=8)
    ax.set_xlabel('importance ratio I_f / I_D')
    ax.set_ylabel('parameters (log)')
    ax.set_title(MANIPULATION_LABELS.get(manipulation, manipulation))
    q = np.percentile(ratios, [50, 99, 99.9])
    line = (f'| {MANIPULATION_LABELS.get(manipulation, manipulation)} | '
            f'{ratios.size} | {q[0]:.3g} | {q[1]:.3g} | {q[2]:.3g} | '
            f'{ratios.max():.4g} |')
    if bounded:
      above = np.mean(np.concatenate([r > b / 2 for r, b in entries]))
      line += f' {bound:.3g} | {100 * above:.2f}% |'
    lines.append(line)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path, '\n'.join(lines) + '\n'


def write_corrective_report(rows, workdir) -> str:
  """Writes figure2.png/.md, table1.md, figure3.png/.md and report.md."""
  os.makedirs(workdir, exist_ok=True)
  fig2 = figure2(rows, os.path.join(workdir, 'figure2.png'))
  fig2_md = figure2_table(rows)
  tab1 = table1(rows)
  fig3, fig3_md = figure3(workdir, os.path.join(workdir, 'figure3.png'),
                          {r.get('setting_key') for r in rows})
  for name, text in (('figure2.md', fig2_md), ('table1.md', tab1),
                     ('figure3.md', fig3_md)):
    with open(os.path.join(workdir, name), 'w') as f:
      f.write(text)
  report = ['# Corrective unlearning benchmark (Goel et al. 2024)', '',
            f'{len(rows)} runs from `results.jsonl`.', '',
            '## Figure 2: Acc_corr against the found fraction', '']
  if fig2:
    report += ['![Figure 2](figure2.png)', '']
  report += [fig2_md, '## Table 1: change in Acc_retain', '', tab1]
  if fig3:
    report += ['## Figure 3: SSD importance ratios', '',
               '![Figure 3](figure3.png)', '', fig3_md]
  path = os.path.join(workdir, 'report.md')
  with open(path, 'w') as f:
    f.write('\n'.join(report))
  return path


def rebuild_main(write_fn, argv=None, description: str | None = None) -> None:
  """`python -m unlearnjax.report_<study> --workdir=DIR`: rebuilds a study's
  figures and tables with `write_fn(rows, workdir) -> paths` from
  `<workdir>/results.jsonl` and prints the paths written."""
  import argparse  # pylint: disable=g-import-not-at-top

  from unlearnjax.results import ResultsFile  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument('--workdir', required=True)
  args = parser.parse_args(argv)
  rows = ResultsFile(os.path.join(args.workdir, 'results.jsonl')).rows()
  for path in write_fn(rows, args.workdir):
    print(path)


def main(argv=None):
  """python -m unlearnjax.report --workdir=DIR: rebuild the report."""
  import argparse  # pylint: disable=g-import-not-at-top
  from unlearnjax.results import ResultsFile  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=main.__doc__)
  parser.add_argument('--workdir', required=True)
  workdir = parser.parse_args(argv).workdir
  rows = ResultsFile(os.path.join(workdir, 'results.jsonl')).rows()
  print(write_corrective_report(rows, workdir))


if __name__ == '__main__':
  main()
