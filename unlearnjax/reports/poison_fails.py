"""Figures and tables of the poison-removal study (Pawelczyk et al. 2024).

From the study's results rows (mean ± std over seeds, the seed count in
each table's header):

- Figure 2 (Gaussian poisons): test accuracy, TPR@FPR=0.01 of the |I_z|
  membership test and √P·GUS after unlearning, per method against the compute
  budget, beside M_o ('none') and M* ('oracle', retrained without the poisons).
- Figure 3 (targeted poisons): target success after unlearning.
- Table 2 (indiscriminate poisons): test accuracy per method and budget.
- Figure 7 (Gaussian poisons): the empirical ROC of the membership test for
  M_o, M* and every method at the largest budget, beside the analytic
  Gaussian curve for M_o's measured shift μ = GUS.

Usage: python -m unlearnjax.reports.poison_fails --workdir=DIR
"""

from __future__ import annotations

import math

import numpy as np

from unlearnjax.metrics import gus as gus_lib
from unlearnjax.reports import base

STUDY = 'poison_fails'
REFERENCES = ('none', 'oracle')
# Pawelczyk's names where they differ from the registry's labels.
LABELS = base.Labels({'none': 'No unlearning (M_o)', 'oracle': 'Retrain (M*)',
                      'retrain': 'Retrain (method)'})
# (row field, axis label, scale, digits) per panel of each figure.
GAUSSIAN_PANELS = (('test_accuracy', 'Test accuracy (%)', 100.0, 1),
                   ('tpr_at_fpr_0.01', 'TPR@FPR=0.01 (%)', 100.0, 1),
                   ('gus_z', '√P·GUS (null N(0,1))', 1.0, 2))
TARGETED_PANELS = (('target_success', 'Target success (%)', 100.0, 1),
                   ('test_accuracy', 'Test accuracy (%)', 100.0, 1))
INDISCRIMINATE_PANELS = (('test_accuracy', 'Test accuracy (%)', 100.0, 1),)
# (manipulation, file stem, title, panels, what it shows) per section.
SECTIONS = (
    ('gaussian', 'figure2', 'Figure 2: Gaussian poisons', GAUSSIAN_PANELS,
     'Test accuracy, TPR@FPR=0.01 of the |I_z| membership test (fresh '
     'noise as negatives) and √P·GUS (≈ N(0, 1) for a model independent of '
     'the noise) after unlearning.'),
    ('gradient_matching', 'figure3', 'Figure 3: targeted poisons',
     TARGETED_PANELS, 'Share of targets classified as the adversarial '
     'label after unlearning.'),
    ('gradient_canceling', 'table2', 'Table 2: indiscriminate poisons',
     INDISCRIMINATE_PANELS, 'Clean test accuracy after unlearning '
     '(the poison lowers it).'))
ROC_FPRS = (0.001, 0.01, 0.1)


def _method(row):
  return row['method']


def _methods(rows):
  return base.first_seen(rows, exclude=REFERENCES)


def _budgets(rows):
  return sorted({r['budget_fraction'] for r in rows
                 if r.get('budget_fraction') is not None})


def _values(rows, method, metric, budget=None):
  return base.finite([r.get(metric) for r in rows if r['method'] == method
                      and (method in REFERENCES or r.get('budget_fraction')
                           in (budget, None))])


def _poison(rows, name):
  return [r for r in rows if r.get('manipulation') == name]


def metric_table(rows, metric: str, scale: float = 100.0, digits: int = 1
                 ) -> str:
  """Markdown: one line per method, one column per budget; M_o and M* rows."""
  budgets = _budgets(rows)
  lines = []
  for ref in REFERENCES:
    lines.append([LABELS(ref)] + [base.cell(_values(rows, ref, metric), scale,
                                            digits)] * len(budgets))
  for method in _methods(rows):
    lines.append([LABELS(method)] + [
        base.cell(_values(rows, method, metric, b), scale, digits)
        for b in budgets])
  return base.table(['method'] + [f'{100 * b:g}% budget' for b in budgets],
                    lines, n=base.seed_count(rows, by=_method))


def budget_figure(rows, panels, title: str):
  """One panel per metric: lines per method against the budget, M_o and M*
  as horizontal lines (mean ± std over seeds); None without budgets."""
  budgets = _budgets(rows)
  panels = [p for p in panels if any(p[0] in r for r in rows)]
  if not budgets or not panels:
    return None
  fig, axes = base.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6),
                            squeeze=False)
  x = [100 * b for b in budgets]
  for ax, (metric, ylabel, scale, _) in zip(axes[0], panels):
    for ref, style in zip(REFERENCES, ('k--', 'g:')):
      mean, _ = base.mean_std(_values(rows, ref, metric))
      if not math.isnan(mean):
        ax.axhline(scale * mean, color=style[0], linestyle=style[1:],
                   label=LABELS(ref))
    for method in _methods(rows):
      mean, std = base.curve([_values(rows, method, metric, b)
                              for b in budgets], scale)
      if np.all(np.isnan(mean)):
        continue
      if np.sum(~np.isnan(mean)) == 1:  # a method without a budget
        ax.axhline(np.nanmean(mean), linestyle='-.', label=LABELS(method),
                   alpha=0.7)
        continue
      ax.errorbar(x, mean, yerr=std, marker='o', capsize=3,
                  label=LABELS(method))
    ax.set_xlabel('Unlearning budget (% of training steps)')
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
  axes[0][-1].legend(fontsize=7, loc='best')
  fig.suptitle(f'{title} ({len(base.seeds(rows))} seed(s))')
  return fig


def _mean_curve(rows, method, field, budget=None):
  curves = [r[field] for r in rows if r['method'] == method and field in r
            and (method in REFERENCES or r.get('budget_fraction') == budget)]
  return np.mean(np.asarray(curves, float), axis=0) if curves else None


def roc_figure(rows):
  """Fig. 7: empirical TPR of the |I| test against FPR (log axis), mean over
  seeds, with the analytic Gaussian curve at M_o's mean shift (None without
  ROC curves in the rows)."""
  rows = [r for r in rows if 'roc_tpr' in r]
  if not rows:
    return None
  fpr = np.asarray(rows[0]['roc_fpr'])
  budget = max(_budgets(rows), default=None)
  fig, ax = base.subplots(figsize=(5.2, 4.2))
  for method in list(REFERENCES) + _methods(rows):
    curve = _mean_curve(rows, method, 'roc_tpr', budget)
    if curve is None:
      continue
    style = {'none': 'k-', 'oracle': 'g-'}.get(method, '-')
    ax.plot(fpr, curve, style, marker='.', label=LABELS(method), alpha=0.85)
  mu = abs(np.mean([r['gus'] for r in rows if r['method'] == 'none']))
  grid = np.logspace(-3, 0, 100)
  ax.plot(grid, np.asarray(gus_lib.analytic_tradeoff_two_sided(grid, mu)),
          'k:', label=f'analytic, |μ| = {mu:.2f} (M_o)')
  ax.plot(grid, grid, color='0.6', linewidth=0.8, label='chance')
  ax.set_xscale('log')
  ax.set_xlabel('FPR')
  ax.set_ylabel('TPR')
  ax.set_title(f'|I_z| membership test; methods at {100 * (budget or 0):g}% '
               'budget', fontsize=9)
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  return fig


def roc_table(rows) -> str:
  """The numbers behind Fig. 7: TPR (%) at FPR 0.001 and 0.01 (mean ± std
  over seeds) and at 0.1 (of the mean curve), methods at the largest
  budget."""
  budget = max(_budgets(rows), default=None)
  fpr = rows[0]['roc_fpr']
  at = int(np.argmin(np.abs(np.log(fpr) - np.log(0.1))))
  lines = []
  for method in list(REFERENCES) + _methods(rows):
    cells = [base.cell(_values(rows, method, metric, budget), 100.0, 1)
             for metric in ('tpr_at_fpr_0.001', 'tpr_at_fpr_0.01')]
    curve = _mean_curve(rows, method, 'roc_tpr', budget)
    cells.append('n/a' if curve is None else f'{100 * curve[at]:.1f}')
    lines.append([LABELS(method)] + cells)
  return base.table(['method'] + [f'FPR {f:g}' for f in ROC_FPRS], lines,
                    n=base.seed_count(rows, by=_method))


def _describe(rows) -> str:
  first = rows[0]
  n = sorted({r.get('n_manipulated') for r in rows})
  return (f'{first["dataset"]}, model {first["model"]}, |S_m| = '
          f'{"/".join(str(v) for v in n)}, seeds {base.seeds(rows)}')


def write_poison_fails_report(rows, workdir) -> list[str]:
  """Writes figure2, figure3, table2, figure7 (PNG + Markdown) and report.md
  into workdir; returns the paths written."""
  rows = [r for r in rows if r.get('study') == STUDY]
  report = base.Report(
      workdir, 'Machine unlearning fails to remove poisons (Pawelczyk et al.)',
      f'{len(rows)} runs from `results.jsonl` ('
      f'{base.tally(rows, lambda r: r["manipulation"])}). Mean ± std over '
      'seeds; budgets are shares of the original '
      'training steps; every method gets the identified poisons.', '')
  for name, stem, title, panels, text in SECTIONS:
    part = _poison(rows, name)
    if not part:
      continue
    report.section(title, f'{text} ({_describe(part)}.)', '')
    tables = []
    for metric, label, scale, digits in panels:
      if any(metric in r for r in part):
        tables += [f'### {label}', '',
                   metric_table(part, metric, scale, digits), '']
    if report.figure(stem, budget_figure(part, panels, title),
                     '\n'.join([f'# {title}', ''] + tables)):
      report.image(f'{stem}.png', title)
    report.add(*tables)
    if name == 'gaussian':
      fig = roc_figure(part)
      if fig:
        roc_md = roc_table(part)
        report.figure('figure7', fig, roc_md)
        report.section('Figure 7: ROC of the membership test',
                       'Empirical TPR against FPR (mean over seeds) beside '
                       'the analytic two-sided Gaussian curve for M_o\'s '
                       'shift.', '')
        report.image('figure7.png', 'Figure 7')
        report.add(roc_md, '')
  report.curves(rows)
  report.save()
  return report.written


main = base.cli(write_poison_fails_report,
                'python -m unlearnjax.reports.poison_fails --workdir=DIR.')

if __name__ == '__main__':
  main()
