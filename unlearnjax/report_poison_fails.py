"""Figures and tables of the poison-removal study (Pawelczyk et al. 2024).

From the study's results rows (mean ± std over seeds):

- Figure 2 (Gaussian poisons): test accuracy, TPR@FPR=0.01 of the |I_z|
  membership test and √P·GUS after unlearning, per method against the compute
  budget, beside M_o ('none') and M* ('oracle', retrained without the poisons).
- Figure 3 (targeted poisons): target success after unlearning.
- Table 2 (indiscriminate poisons): test accuracy per method and budget.
- Figure 7 (Gaussian poisons): the empirical ROC of the membership test for
  M_o, M* and every method at the largest budget, beside the analytic
  Gaussian curve for M_o's measured shift μ = GUS.

Usage: python -m unlearnjax.report_poison_fails --workdir=DIR
"""

from __future__ import annotations

import collections
import math
import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from unlearnjax.metrics import gus as gus_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from unlearnjax.report import _fmt, _mean_std  # pylint: disable=g-import-not-at-top,wrong-import-position

STUDY = 'poison_fails'
REFERENCES = ('none', 'oracle')
LABELS = {'none': 'No unlearning (M_o)', 'oracle': 'Retrain (M*)',
          'retrain': 'Retrain (method)',
          'gd': 'GD', 'ngd': 'NGD', 'gradient_ascent': 'GA', 'eu_k': 'EU-k',
          'cf_k': 'CF-k', 'neggrad_plus': 'NegGrad+', 'scrub': 'SCRUB'}
# (row field, axis label, scale, digits) per panel of each figure.
GAUSSIAN_PANELS = (('test_accuracy', 'Test accuracy (%)', 100.0, 1),
                   ('tpr_at_fpr_0.01', 'TPR@FPR=0.01 (%)', 100.0, 1),
                   ('gus_z', '√P·GUS (null N(0,1))', 1.0, 2))
TARGETED_PANELS = (('target_success', 'Target success (%)', 100.0, 1),
                   ('test_accuracy', 'Test accuracy (%)', 100.0, 1))
INDISCRIMINATE_PANELS = (('test_accuracy', 'Test accuracy (%)', 100.0, 1),)


def _label(method):
  return LABELS.get(method, method)


def _finite(values):
  return [v for v in values if v is not None and not
          (isinstance(v, float) and math.isnan(v))]


def _methods(rows):
  seen = []
  for r in rows:
    if r['method'] not in REFERENCES and r['method'] not in seen:
      seen.append(r['method'])
  return seen


def _budgets(rows):
  return sorted({r['budget_fraction'] for r in rows
                 if r.get('budget_fraction') is not None})


def _values(rows, method, metric, budget=None):
  return _finite([r.get(metric) for r in rows if r['method'] == method
                  and (method in REFERENCES or r.get('budget_fraction')
                       in (budget, None))])


def _poison(rows, name):
  return [r for r in rows if r.get('manipulation') == name]


def metric_table(rows, metric: str, scale: float = 100.0, digits: int = 1
                 ) -> str:
  """Markdown: one line per method, one column per budget; M_o and M* rows."""
  budgets = _budgets(rows)
  head = '| method | ' + ' | '.join(f'{100 * b:g}% budget' for b in budgets)
  out = [head + ' |', '|---' * (len(budgets) + 1) + '|']
  for ref in REFERENCES:
    mean, std = _mean_std(_values(rows, ref, metric))
    cell = _fmt(mean, std, scale, digits)
    out.append(f'| {_label(ref)} | ' + ' | '.join([cell] * len(budgets))
               + ' |')
  for method in _methods(rows):
    cells = []
    for budget in budgets:
      mean, std = _mean_std(_values(rows, method, metric, budget))
      cells.append(_fmt(mean, std, scale, digits))
    out.append(f'| {_label(method)} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(out)


def _seeds(rows):
  return sorted({r['seed'] for r in rows})


def budget_figure(rows, panels, path: str, title: str) -> str | None:
  """One panel per metric: lines per method against the budget, M_o and M*
  as horizontal lines (mean ± std over seeds)."""
  budgets = _budgets(rows)
  panels = [p for p in panels if any(p[0] in r for r in rows)]
  if not budgets or not panels:
    return None
  fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6),
                           squeeze=False)
  x = [100 * b for b in budgets]
  for ax, (metric, ylabel, scale, _) in zip(axes[0], panels):
    for ref, style in zip(REFERENCES, ('k--', 'g:')):
      mean, _ = _mean_std(_values(rows, ref, metric))
      if not math.isnan(mean):
        ax.axhline(scale * mean, color=style[0], linestyle=style[1:],
                   label=_label(ref))
    for method in _methods(rows):
      stats = [_mean_std(_values(rows, method, metric, b)) for b in budgets]
      mean = np.array([scale * m for m, _ in stats])
      std = np.array([scale * (s if not math.isnan(s) else 0.0)
                      for _, s in stats])
      if np.all(np.isnan(mean)):
        continue
      if np.sum(~np.isnan(mean)) == 1:  # a method without a budget
        ax.axhline(np.nanmean(mean), linestyle='-.', label=_label(method),
                   alpha=0.7)
        continue
      ax.errorbar(x, mean, yerr=std, marker='o', capsize=3,
                  label=_label(method))
    ax.set_xlabel('Unlearning budget (% of training steps)')
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
  axes[0][-1].legend(fontsize=7, loc='best')
  fig.suptitle(f'{title} ({len(_seeds(rows))} seed(s))')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def _mean_curve(rows, method, field, budget=None):
  curves = [r[field] for r in rows if r['method'] == method and field in r
            and (method in REFERENCES or r.get('budget_fraction') == budget)]
  return np.mean(np.asarray(curves, float), axis=0) if curves else None


def roc_figure(rows, path: str) -> str | None:
  """Fig. 7: empirical TPR of the |I| test against FPR (log axis), mean over
  seeds, with the analytic Gaussian curve at M_o's mean shift."""
  rows = [r for r in rows if 'roc_tpr' in r]
  if not rows:
    return None
  fpr = np.asarray(rows[0]['roc_fpr'])
  budget = max(_budgets(rows), default=None)
  fig, ax = plt.subplots(figsize=(5.2, 4.2))
  for method in list(REFERENCES) + _methods(rows):
    curve = _mean_curve(rows, method, 'roc_tpr', budget)
    if curve is None:
      continue
    style = {'none': 'k-', 'oracle': 'g-'}.get(method, '-')
    ax.plot(fpr, curve, style, marker='.', label=_label(method), alpha=0.85)
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
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def _describe(rows) -> str:
  first = rows[0]
  n = sorted({r.get('n_manipulated') for r in rows})
  return (f'{first["dataset"]}, model {first["model"]}, |S_m| = '
          f'{"/".join(str(v) for v in n)}, seeds {_seeds(rows)}')


def write_poison_fails_report(rows, workdir) -> list[str]:
  """Writes figure2, figure3, table2, figure7 (PNG + Markdown) and report.md
  into workdir; returns the paths written."""
  os.makedirs(workdir, exist_ok=True)
  rows = [r for r in rows if r.get('study') == STUDY]
  written = []

  def write(name, text):
    path = os.path.join(workdir, name)
    with open(path, 'w') as f:
      f.write(text + '\n')
    written.append(path)

  counts = collections.Counter(r['manipulation'] for r in rows)
  report = ['# Machine unlearning fails to remove poisons (Pawelczyk et al.)',
            '', f'{len(rows)} runs from `results.jsonl` ('
            + ', '.join(f'{n} {k}' for k, n in sorted(counts.items()))
            + '). Mean ± std over seeds; budgets are shares of the original '
            'training steps; every method gets the identified poisons.', '']
  sections = (
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
  for name, stem, title, panels, text in sections:
    part = _poison(rows, name)
    if not part:
      continue
    report += [f'## {title}', '', f'{text} ({_describe(part)}.)', '']
    png = budget_figure(part, panels, os.path.join(workdir, stem + '.png'),
                        title)
    if png:
      written.append(png)
      report += [f'![{title}]({stem}.png)', '']
    tables = []
    for metric, label, scale, digits in panels:
      if any(metric in r for r in part):
        tables += [f'### {label}', '', metric_table(part, metric, scale,
                                                    digits), '']
    write(stem + '.md', '\n'.join([f'# {title}', ''] + tables))
    report += tables
    if name == 'gaussian':
      roc = roc_figure(part, os.path.join(workdir, 'figure7.png'))
      if roc:
        written.append(roc)
        report += ['## Figure 7: ROC of the membership test', '',
                   'Empirical TPR against FPR (mean over seeds) beside the '
                   'analytic two-sided Gaussian curve for M_o\'s shift.', '',
                   '![Figure 7](figure7.png)', '',
                   '| method | ' + ' | '.join(
                       f'FPR {f:g}' for f in (0.001, 0.01, 0.1)) + ' |',
                   '|---|---|---|---|']
        budget = max(_budgets(part), default=None)
        for method in list(REFERENCES) + _methods(part):
          cells = []
          for metric in ('tpr_at_fpr_0.001', 'tpr_at_fpr_0.01'):
            cells.append(_fmt(*_mean_std(_values(part, method, metric,
                                                 budget)), 100.0, 1))
          curve = _mean_curve(part, method, 'roc_tpr', budget)
          fpr = part[0]['roc_fpr']
          at = int(np.argmin(np.abs(np.log(fpr) - np.log(0.1))))
          cells.append('n/a' if curve is None else f'{100 * curve[at]:.1f}')
          report.append(f'| {_label(method)} | ' + ' | '.join(cells) + ' |')
        report.append('')
  write('report.md', '\n'.join(report))
  return written


def main(argv=None):
  """python -m unlearnjax.report_poison_fails --workdir=DIR."""
  from unlearnjax import report  # pylint: disable=g-import-not-at-top
  report.rebuild_main(write_poison_fails_report, argv, main.__doc__)


if __name__ == '__main__':
  main()
