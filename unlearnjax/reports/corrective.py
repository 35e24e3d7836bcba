"""Figures (PNG) and Markdown tables of the corrective study (Goel et al.
2024) from its results rows.

Everything here reads only the rows of `results.jsonl` (and the saved SSD
ratio files), so every figure can be regenerated with
`python -m unlearnjax.reports.corrective --workdir=DIR`.
"""

from __future__ import annotations

import collections
import glob
import math
import os

import numpy as np

from unlearnjax.manipulations import label as manipulation_label
from unlearnjax.reports import base

# Goel's names where they differ from the registry's labels.
LABELS = base.Labels({'none': 'None (original)', 'oracle': 'Oracle M*',
                      'retrain': 'RewoD', 'finetune': 'CF'})
METHOD_ORDER = ('retrain', 'finetune', 'ssd', 'ssd_exact', 'bad_teacher',
                'scrub')


def _method(row):
  return row['method']


def _groups(rows, study='corrective'):
  """(dataset, manipulation) -> rows of `study` (the corrective study).

  Rows of several settings (e.g. two poison sizes) of one (dataset,
  manipulation) are kept apart: the dataset label gets the setting key.
  """
  settings = collections.defaultdict(set)
  for row in rows:
    settings[(row['dataset'], row['manipulation'])].add(row.get('setting_key'))
  groups = collections.defaultdict(list)
  for row in rows:
    if row.get('study', 'corrective') == study and (
        row.get('part', 'main') == 'main'):
      dataset = row['dataset']
      if len(settings[(dataset, row['manipulation'])]) > 1:
        dataset = f'{dataset} {row.get("setting_key", "")[:6]}'
      groups[(dataset, row['manipulation'])].append(row)
  return dict(sorted(groups.items()))


def _methods(rows):
  return base.ordered({r['method'] for r in rows} - {'none', 'oracle'},
                      METHOD_ORDER)


def _series(rows, method, metric):
  """fraction -> list of values over seeds ('one-shot' for one-shot rows)."""
  series = collections.defaultdict(list)
  for r in rows:
    if r['method'] == method:
      x = 'one-shot' if r.get('one_shot') else r['found_fraction']
      series[x].append(r[metric])
  return series


def _plot_by_fraction(ax, group, method, value, **style):
  """Mean ± std over seeds of `value(row)` against the found fraction, the
  one-shot point as a star at 0; returns the line's colour."""
  series = base.by_found_fraction(group, method, value)
  xs = sorted(x for x in series if x != 'one-shot')
  line = ax.errorbar(xs, [np.mean(series[x]) for x in xs],
                     yerr=[np.std(series[x]) for x in xs], marker='o', ms=3,
                     capsize=2, **style)
  colour = line[0].get_color()
  if 'one-shot' in series:
    ax.errorbar([0.0], [np.mean(series['one-shot'])],
                yerr=[np.std(series['one-shot'])], marker='*', ms=8,
                color=colour, capsize=2, ls=style.get('ls', '-'))
  return colour


def figure2(rows):
  """Goel Fig. 2: Acc_corr against the found fraction, per method (None if
  there are no rows)."""
  groups = _groups(rows)
  if not groups:
    return None
  fig, axes = base.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.2),
                            squeeze=False)
  for ax, ((dataset, manipulation), group) in zip(axes[0], groups.items()):
    for method in _methods(group):
      _plot_by_fraction(ax, group, method, lambda r: 100 * r['acc_corr'],
                        label=LABELS(method))
    for method, style in (('none', 'k--'), ('oracle', 'k:')):
      values = [r['acc_corr'] for r in group if r['method'] == method]
      if values:
        ax.axhline(100 * np.mean(values), ls=style[1:], color='k',
                   label=LABELS(method))
    ax.set_xlabel('found fraction |S_f|/|S_m|  (★ at 0: one sample)')
    ax.set_ylabel('Acc_corr (%)')
    ax.set_title(f'{manipulation_label(manipulation)} '
                 f'({dataset})')
    ax.set_xlim(-0.05, 1.05)
    ax.grid(alpha=0.3)
  axes[0][-1].legend(fontsize=8, loc='best')
  return fig


def figure2_table(rows) -> str:
  """The numbers behind Fig. 2: Acc_corr (%) mean ± std over seeds."""
  out = []
  for (dataset, manipulation), group in _groups(rows).items():
    fractions = sorted({r['found_fraction'] for r in group
                        if r['found_fraction'] is not None})
    has_one_shot = any(r.get('one_shot') for r in group)
    columns = (['one-shot'] if has_one_shot else []) + fractions
    out.append(f'**{manipulation_label(manipulation)}, '
               f'{dataset}** — Acc_corr (%), mean ± std over seeds '
               f'{base.seeds(group)}\n')
    lines = []
    for method in ('none', 'oracle'):
      mean, std = base.mean_std([r['acc_corr'] for r in group
                                 if r['method'] == method])
      if not math.isnan(mean):
        lines.append([LABELS(method)] + [base.fmt(mean, std, 100)]
                     * len(columns))
    for method in _methods(group):
      series = _series(group, method, 'acc_corr')
      lines.append([LABELS(method)]
                   + [base.cell(series.get(c, []), 100) for c in columns])
    out.append(base.table(['method'] + [str(c) for c in columns], lines,
                          n=base.seed_count(group, by=_method)))
    out.append('')
  return '\n'.join(out)


def table1(rows) -> str:
  """Goel Tab. 1: change in Acc_retain (points) per method, mean ± std over
  the found fractions 0.1 … 1.0 (seeds averaged first)."""
  groups = _groups(rows)
  if not groups:
    return ''
  methods = []
  for group in groups.values():
    methods += [m for m in _methods(group) if m not in methods]
  lines = [['None (original)'] + [
      base.cell([100 * r['acc_retain'] for r in group
                 if r['method'] == 'none']) for group in groups.values()]]
  for method in methods:
    cells = []
    for group in groups.values():
      series = _series(group, method, 'model_damage')
      per_fraction = [np.mean(v) for x, v in series.items() if x != 'one-shot']
      cells.append(base.cell(per_fraction, digits=2))
    lines.append([LABELS(method)] + cells)
  every = [r for group in groups.values() for r in group]
  return '\n'.join([
      'Change in Acc_retain (percentage points) after unlearning, mean ± '
      'std over found fractions 0.1 … 1.0 (each the mean over seeds); '
      'higher is better. "None" shows the original Acc_retain (%).', '',
      base.table(['method'] + [f'{manipulation_label(m)} ({d})'
                               for d, m in groups], lines,
                 n=base.seed_count(every, by=_method))]) + '\n'


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


def figure3(workdir, setting_keys=None):
  """Goel Fig. 3: histogram of SSD's importance ratio I_f/I_D (S_f = S_m);
  returns (the figure or None, its table).

  With I_D over the whole training set (which holds S_f), every ratio is at
  most |S_tr|/|S_f| (I_D >= |S_f|/|S_tr| * I_f); the bound is drawn and
  tabulated, since it differs between manipulations of different sizes.
  """
  files = _ratio_files(workdir, setting_keys or set())
  if not files:
    return None, ''
  fig, axes = base.subplots(1, len(files), figsize=(5.5 * len(files), 3.8),
                            squeeze=False)
  bounded = any(not math.isnan(b) for entries in files.values()
                for _, b in entries)
  lines = []
  for ax, (manipulation, entries) in zip(axes[0], sorted(files.items())):
    ratios = np.concatenate([r for r, _ in entries])
    bound = float(np.mean([b for _, b in entries]))
    ax.hist(ratios, bins=100, log=True, color='tab:blue')
    if not math.isnan(bound):
      ax.axvline(bound, color='k', ls='--', lw=1, label='bound |S_tr|/|S_f|')
      ax.legend(fontsize=8)
    ax.set_xlabel('importance ratio I_f / I_D')
    ax.set_ylabel('parameters (log)')
    ax.set_title(manipulation_label(manipulation))
    q = np.percentile(ratios, [50, 99, 99.9])
    line = [manipulation_label(manipulation), ratios.size,
            f'{q[0]:.3g}', f'{q[1]:.3g}', f'{q[2]:.3g}', f'{ratios.max():.4g}']
    if bounded:
      above = np.mean(np.concatenate([r > b / 2 for r, b in entries]))
      line += [f'{bound:.3g}', f'{100 * above:.2f}%']
    lines.append(line)
  header = ['manipulation', 'parameters', 'median', '99th pct', '99.9th pct',
            'max'] + (['bound (train size / forget size)',
                       'parameters above half the bound'] if bounded else [])
  return fig, '\n'.join([
      'SSD importance ratio I_f/I_D over all parameters, S_f = S_m '
      '(Goel Fig. 3); pooled over seeds.'
      + (' With I_D over the whole training set no ratio can exceed '
         '|S_tr|/|S_f| (the bound).' if bounded else ''), '',
      base.table(header, lines)]) + '\n'


def expansion_table(rows, study='corrective') -> str:
  """Issue 12: expand-then-correct beside the seeds' methods, per
  manipulation and found fraction: poison healed (100·Acc_corr/Acc_corr of
  M*), model damage (points of Acc_retain; for a false report, of the clean
  test accuracy), and the expansion's recall and precision of S_m (recall
  of S_f alone in the header), mean ± std over seeds. Empty without
  expansion rows. `study`: whose rows (the Potion report shows its own)."""
  if not any('expansion_recall' in r for r in rows):
    return ''
  out = []
  for (dataset, manipulation), group in _groups(rows, study).items():
    columns = base.found_fraction_columns(group)
    methods = _methods(group)
    expanded = [m for m in methods
                if any('expansion_recall' in r for r in group
                       if r['method'] == m)]
    out.append(f'**{manipulation_label(manipulation)}, {dataset}**, '
               f'seeds {base.seeds(group)}\n')
    lines = []
    for metric, name, scale in (('poison_healed', 'healed %', 1),
                                ('model_damage', 'damage (pts)', 1)):
      for method in methods:
        series = base.by_found_fraction(group, method, lambda r: r[metric])
        lines.append([f'{LABELS(method)}: {name}']
                     + [base.cell(series.get(c, []), scale) for c in columns])
    found = base.by_found_fraction(group, expanded[0] if expanded else '',
                                   lambda r: r['expansion_found_recall'])
    lines.append(['S_f alone: recall %']
                 + [base.cell(found.get(c, []), 100) for c in columns])
    for method in expanded[:1]:  # the expansion is shared by every method
      for metric, name in (('expansion_recall', 'recall %'),
                           ('expansion_precision', 'precision %')):
        series = base.by_found_fraction(group, method, lambda r: r[metric])
        lines.append([f'expansion: {name}']
                     + [base.cell(series.get(c, []), 100) for c in columns])
      for metric, name in (('expansion_true_added', 'S_m rows added'),
                           ('expansion_false_added', 'clean rows added')):
        series = base.by_found_fraction(group, method, lambda r: r[metric])
        lines.append([f'expansion: {name}']
                     + [base.cell(series.get(c, []), 1, 1) for c in columns])
    out.append(base.table(['row'] + [str(c) for c in columns], lines,
                          n=base.seed_count(group, by=_method)))
    out.append('')
  return '\n'.join(out)


def _expansion_groups(rows, study):
  return {k: g for k, g in _groups(rows, study).items()
          if any('expansion_recall' in r for r in g)}


def expansion_figure(rows, study='corrective'):
  """Issue 12's figure: per manipulation, poison healed (%) against the
  found fraction for each expand_<m> (solid) beside its seeds' method <m>
  (dashed), and below it the expansion's recall and precision of S_m with
  S_f's own recall. None without expansion rows."""
  groups = _expansion_groups(rows, study)
  if not groups:
    return None
  fig, axes = base.subplots(2, len(groups), figsize=(5.5 * len(groups), 7.6),
                            squeeze=False)
  for column, ((dataset, manipulation), group) in enumerate(groups.items()):
    top, bottom = axes[0][column], axes[1][column]
    methods = _methods(group)
    expanded = [m for m in methods if m.startswith('expand_')]
    for method in expanded:
      colour = _plot_by_fraction(top, group, method,
                                 lambda r: r['poison_healed'],
                                 label=LABELS(method))
      inner = method[len('expand_'):]
      if inner in methods:
        _plot_by_fraction(top, group, inner, lambda r: r['poison_healed'],
                          ls='--', color=colour, alpha=0.6,
                          label=LABELS(inner))
    top.axhline(100, color='k', ls=':', lw=0.8)
    top.set_ylabel('poison healed (% of M*)')
    top.set_title(f'{manipulation_label(manipulation)} ({dataset})')
    if expanded:
      for metric, label in (('expansion_recall', 'expansion recall'),
                            ('expansion_precision', 'expansion precision'),
                            ('expansion_found_recall', 'S_f alone recall')):
        _plot_by_fraction(bottom, group, expanded[0],
                          lambda r, m=metric: 100 * r[m], label=label,
                          ls=':' if metric == 'expansion_found_recall' else '-')
    bottom.set_ylabel('% of S_m / of the expanded set')
    bottom.set_ylim(-5, 105)
    for ax in (top, bottom):
      ax.set_xlabel('found fraction |S_f|/|S_m|  (★ at 0: one sample)')
      ax.set_xlim(-0.05, 1.05)
      ax.grid(alpha=0.3)
  axes[0][-1].legend(fontsize=7, loc='best')
  axes[1][-1].legend(fontsize=7, loc='best')
  return fig


def expansion_section(report, rows, study='corrective') -> None:
  """Adds issue 12's section (expansion.png, expansion.md) to `report` when
  `study`'s rows hold expand-then-correct runs (the corrective and the
  Potion reports)."""
  expansion_md = expansion_table(rows, study)
  if expansion_md:
    report.section('Expand, then correct (issue 12)')
    if report.figure('expansion', expansion_figure(rows, study),
                     expansion_md):
      report.image('expansion.png', 'Expand, then correct')
    report.add(expansion_md)


def write_corrective_report(rows, workdir) -> str:
  """Writes figure2.png/.md, table1.md, figure3.png/.md and report.md;
  returns the path of report.md."""
  report = base.Report(
      workdir, 'Corrective unlearning benchmark (Goel et al. 2024)',
      f'{len(rows)} runs from `results.jsonl`.', '')
  report.section('Figure 2: Acc_corr against the found fraction')
  fig2_md = figure2_table(rows)
  if report.figure('figure2', figure2(rows), fig2_md):
    report.image('figure2.png', 'Figure 2')
  report.add(fig2_md)
  tab1 = table1(rows)
  report.write('table1.md', tab1)
  report.section('Table 1: change in Acc_retain', tab1)
  fig3, fig3_md = figure3(workdir, {r.get('setting_key') for r in rows})
  if report.figure('figure3', fig3, fig3_md):
    report.section('Figure 3: SSD importance ratios')
    report.image('figure3.png', 'Figure 3')
    report.add(fig3_md)
  expansion_section(report, rows)
  report.curves(rows)
  return report.save()


main = base.cli(write_corrective_report,
                'python -m unlearnjax.reports.corrective --workdir=DIR: rebuild the report.')

if __name__ == '__main__':
  main()
