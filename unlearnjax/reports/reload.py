"""Tables and figures of the RELOAD study (RELOAD §4.2-4.3, Tables 1-3).

From the study's results rows (mean ± std over seeds, the seed count in
each table's header):

- One Markdown table per scenario (`table_<scenario>.md`), methods as rows.
  Unlearning scenarios (Tables 1-2): NA, ΔFA, ΔFE, ΔFMIA, NSKL, FSKL, Cost
  and clean test accuracy; the Retrain (M*) row shows its own NA, FA, FE and
  FMIA, as the paper's top row does. Remedial learning (cross pattern,
  Table 3): also the accuracy on the clean test set (D_new^(test)), on every
  test image with the cross (`triggered_test`, D_new^(test,§)) and on the
  crossed test images of the other classes only (`affected`).
- `figure.png` (numbers in `figure.md`): bars of ΔFA and FSKL per method,
  one column per scenario; for the cross pattern, a column of clean and
  triggered test accuracy.
- `report.md`: everything above, with which method is closest to M* on
  each metric. A 'retrain_rerun' row (a second M* from another
  initialisation) is the noise floor: the gaps of an exact unlearner.

Usage: python -m unlearnjax.reports.reload --workdir=DIR
"""

from __future__ import annotations

import math

import numpy as np

from unlearnjax.reports import base

STUDY = 'reload'
REFERENCES = ('original', 'retrain', 'retrain_rerun')
NOISE_FLOOR = 'retrain_rerun'
# RELOAD's names where they differ from the registry's labels.
LABELS = base.Labels({'original': 'Original (M_o)', 'retrain': 'Retrain (M*)',
                      'retrain_rerun': 'Retrain, 2nd init (noise floor)',
                      'finetune': 'FT'})
SCENARIO_TITLES = {
    'random_10': 'Random forgetting, 10% of the training data (Table 1)',
    'random_30': 'Random forgetting, 30% of the training data (A.6)',
    'in_class': 'In-class forgetting (Table 2)',
    'cross_pattern': 'Cross-pattern shortcut, remedial learning (Table 3)',
}
# (row field, column header, scale, digits, field shown on the Retrain row).
UNLEARNING_COLUMNS = (
    ('na', 'NA (%) ↑', 100.0, 2, 'na'),
    ('delta_fa', 'ΔFA (pts) ↓', 100.0, 2, 'fa'),
    ('delta_fe', 'ΔFE ↓', 1.0, 3, 'fe'),
    ('delta_fmia', 'ΔFMIA (pts) ↓', 100.0, 1, 'fmia'),
    ('nskl', 'NSKL ↓', 1.0, 3, 'nskl'),
    ('fskl', 'FSKL ↓', 1.0, 3, 'fskl'),
    ('cost', 'Cost ↓', 1.0, 2, 'cost'),
    ('test_accuracy', 'Test acc. (%) ↑', 100.0, 2, 'test_accuracy'),
)
IN_CLASS_COLUMNS = (('forget_class_test_accuracy',
                     'Forgotten class, test acc. (%)', 100.0, 1,
                     'forget_class_test_accuracy'),)
REMEDIAL_COLUMNS = (
    ('test_accuracy', 'Acc. D_new^(test) (%) ↑', 100.0, 2, 'test_accuracy'),
    ('triggered_test_accuracy', 'Acc. D_new^(test,§) (%) ↑', 100.0, 2,
     'triggered_test_accuracy'),
    ('affected_accuracy', 'Acc. crossed other classes (%) ↑', 100.0, 2,
     'affected_accuracy'),
    ('cost', 'Cost ↓', 1.0, 2, 'cost'),
) + tuple(c for c in UNLEARNING_COLUMNS if c[0] not in ('cost',
                                                         'test_accuracy'))
# Gaps to M* ranked in the "closest to M*" lines (lower is better).
GAP_METRICS = (('delta_fa', 'ΔFA'), ('delta_fe', 'ΔFE'),
               ('delta_fmia', 'ΔFMIA'), ('nskl', 'NSKL'), ('fskl', 'FSKL'))
# (row field, axis label, scale, digits) of the figure's panels: the gaps of
# every scenario, the accuracies of a remedial one.
GAP_PANELS = (('delta_fa', 'ΔFA (pts, ↓)', 100.0, 2),
              ('fskl', 'FSKL (↓)', 1.0, 3))
REMEDIAL_PANELS = (('test_accuracy', 'Acc. D_new^(test) (%)', 100.0, 2),
                   ('triggered_test_accuracy', 'Acc. D_new^(test,§) (%)',
                    100.0, 2))


def _method(row):
  return row['method']


def _methods(rows):
  return base.first_seen(rows, exclude=REFERENCES)


def _values(rows, method, metric):
  return base.finite([r.get(metric) for r in rows if r['method'] == method])


def _groups(rows) -> dict:
  """(scenario, setting_key) -> rows, in the order first seen; the title
  gets the setting key only when a scenario has several settings."""
  groups = {}
  for r in rows:
    groups.setdefault((r['scenario'], r['setting_key']), []).append(r)
  return groups


def _several(groups) -> set:
  """The scenarios run with more than one setting."""
  scenarios = [scenario for scenario, _ in groups]
  return {s for s in scenarios if scenarios.count(s) > 1}


def _columns(rows):
  scenario = rows[0]['scenario']
  if any(r.get('remedial') for r in rows):
    columns = REMEDIAL_COLUMNS
  else:
    columns = UNLEARNING_COLUMNS
  if scenario == 'in_class' or any('forget_class_test_accuracy' in r
                                   for r in rows):
    columns = columns + IN_CLASS_COLUMNS
  return [c for c in columns if any(c[0] in r or c[4] in r for r in rows)]


def _diverged(rows, method):
  return sum(1 for r in rows if r['method'] == method and r.get('diverged'))


def scenario_table(rows) -> str:
  """Markdown: one line per method (M_o and M* first), mean ± std over
  seeds; the Retrain row shows M*'s own values of the gapped metrics."""
  columns = _columns(rows)
  lines = []
  for method in list(REFERENCES) + _methods(rows):
    if not any(r['method'] == method for r in rows):
      continue
    cells = []
    for field, _, scale, digits, own in columns:
      metric = own if method == 'retrain' else field
      cells.append(base.cell(_values(rows, method, metric), scale, digits))
    label = LABELS(method)
    diverged = _diverged(rows, method)
    if diverged:
      total = sum(1 for r in rows if r['method'] == method)
      label += f' ({diverged} of {total} seeds diverged)'
    lines.append([label] + cells)
  return base.table(['method'] + [c[1] for c in columns], lines,
                    n=base.seed_count(rows, by=_method))


def closest_to_retrain(rows) -> list[str]:
  """One line per gap metric: the methods (M_o excluded) with the smallest
  mean gap to M*, with RELOAD's and FT's gaps for comparison."""
  lines = []
  methods = _methods(rows)
  for metric, name in GAP_METRICS:
    means = {m: base.mean_std(_values(rows, m, metric))[0] for m in methods}
    means = {m: v for m, v in means.items() if not math.isnan(v)}
    if not means:
      continue
    best = min(means.values())
    winners = [m for m, v in means.items() if v == best]
    rank = lambda m: 1 + sum(v < means[m] for v in means.values())
    parts = [f'{name}: best {", ".join(LABELS(m) for m in winners)} '
             f'({best:.3g})']
    for m in ('reload', 'finetune'):
      if m in means and m not in winners:
        parts.append(f'{LABELS(m)} {means[m]:.3g} (rank {rank(m)} of '
                     f'{len(means)})')
    for reference, label in (('original', 'M_o'),
                             (NOISE_FLOOR, 'noise floor (2nd M*)')):
      value = base.mean_std(_values(rows, reference, metric))[0]
      if not math.isnan(value):
        parts.append(f'{label} {value:.3g}')
    lines.append('- ' + '; '.join(parts))
  return lines


def _bar_panel(ax, rows, metric, scale, ylabel, methods):
  stats = [base.mean_std(_values(rows, m, metric)) for m in methods]
  mean = np.array([scale * m for m, _ in stats], float)
  std = np.array([0.0 if math.isnan(s) else scale * s for _, s in stats])
  x = np.arange(len(methods))
  colors = ['tab:red' if m == 'reload' else 'tab:gray' if m in REFERENCES
            else 'tab:blue' for m in methods]
  ax.bar(x, np.nan_to_num(mean), yerr=std, color=colors, capsize=2)
  tops = np.sort(np.nan_to_num(mean + std))
  if tops.size > 2 and tops[-1] > 4 * max(tops[-2], 1e-12):
    # One method far off (e.g. a diverged run): clip it, label its value.
    limit = 2.5 * tops[-2]
    ax.set_ylim(min(0.0, np.nanmin(mean)), limit)
    for i, value in enumerate(mean):
      if value > limit:
        ax.text(i, 0.97 * limit, f'{value:.3g}', ha='center', va='top',
                fontsize=7, rotation=90, color='white')
  ax.set_xticks(x)
  short = {'original': 'M_o', 'retrain': 'M*', NOISE_FLOOR: '2nd M*'}
  ax.set_xticklabels([short.get(m, LABELS(m)) for m in methods], rotation=60,
                     fontsize=7)
  ax.set_ylabel(ylabel, fontsize=8)
  ax.grid(axis='y', alpha=0.3)


def _figure_columns(groups: dict) -> list:
  """(title, heading, rows, panels, methods) per column of the figure: the
  gaps of every scenario setting, then the accuracies of each remedial one.
  The heading (of the table of the numbers) names the setting where a
  scenario has several."""
  several = _several(groups)
  columns = []
  for (scenario, key), rows in groups.items():
    heading = f'{scenario} [{key}]' if scenario in several else scenario
    methods = [m for m in ('original', NOISE_FLOOR)
               if any(r['method'] == m for r in rows)] + _methods(rows)
    columns.append((scenario, heading, rows, GAP_PANELS, methods))
  for (scenario, key), rows in groups.items():
    if any(r.get('remedial') for r in rows):
      heading = f'{scenario} [{key}]' if scenario in several else scenario
      methods = ['original', 'retrain'] + _methods(rows)
      columns.append((f'{scenario}: remedial', f'{heading}: remedial', rows,
                      REMEDIAL_PANELS, methods))
  return columns


def figure(groups: dict):
  """ΔFA and FSKL bars per method (rows), one column per scenario; plus a
  column of clean/triggered test accuracy for each remedial scenario (None
  without rows)."""
  if not groups:
    return None
  columns = _figure_columns(groups)
  fig, axes = base.subplots(2, len(columns), figsize=(3.4 * len(columns), 6.2),
                            squeeze=False)
  for column, (title, _, rows, panels, methods) in enumerate(columns):
    for row, (metric, ylabel, scale, _) in enumerate(panels):
      _bar_panel(axes[row][column], rows, metric, scale, ylabel, methods)
    axes[0][column].set_title(title, fontsize=9)
  first = next(iter(groups.values()))
  fig.suptitle(f'RELOAD study: gaps to the retrained model M* '
               f'({first[0]["dataset"]}, {first[0]["model"]}, '
               f'{len(base.seeds([r for g in groups.values() for r in g]))} '
               'seed(s); RELOAD in red)', fontsize=10)
  return fig


def figure_table(groups: dict) -> str:
  """The numbers behind `figure`: each bar's mean ± std over seeds."""
  out = ['The bars of figure.png: mean ± std over seeds.', '']
  for _, heading, rows, panels, methods in _figure_columns(groups):
    lines = [[LABELS(m)] + [base.cell(_values(rows, m, metric), scale, digits)
                            for metric, _, scale, digits in panels]
             for m in methods]
    shown = [r for r in rows if r['method'] in methods]
    out += [f'### {heading}', '', base.table(
        ['method'] + [p[1] for p in panels], lines,
        n=base.seed_count(shown, by=_method)), '']
  return '\n'.join(out)


def _describe(rows) -> str:
  first = rows[0]
  n_forget = sorted({r['n_forget'] for r in rows})
  n_new = sorted({r['n_new'] for r in rows})
  text = (f'{first["dataset"]}, model {first["model"]}, |D| = '
          f'{first["n_train"]}, |D_forget| = '
          f'{"/".join(str(v) for v in n_forget)}, |D_new| = '
          f'{"/".join(str(v) for v in n_new)}, seeds {base.seeds(rows)}')
  if 'forget_class' in first:
    text += ('; forgotten class per seed '
             + str(sorted({(r['seed'], r['forget_class']) for r in rows})))
  if 'shortcut_classes' in first:
    text += ('; shortcut classes per seed '
             + str(sorted({(r['seed'], tuple(r['shortcut_classes']))
                           for r in rows})))
  return text


NOTES = (
    'NA: accuracy on D_new; ΔFA, ΔFE: |accuracy, mean cross-entropy on '
    'D_forget − M*\'s|; ΔFMIA: |share of D_forget the retain-vs-test '
    'entropy attack calls member − M*\'s| (RELOAD §4.2, Shokri-style; '
    'members: D_new, non-members: the test set); NSKL, FSKL: symmetric KL '
    'to M*\'s outputs on D_new, D_forget; Cost: wall time / M*\'s training '
    'time (methods timed after an untimed warm-up run, so compilation is '
    'not counted; RELOAD\'s g_D is cached with M_o and not counted, as '
    'Alg. 1 assumes). The Retrain row shows M*\'s own NA, FA, FE, FMIA; '
    'the noise-floor row is a second M* trained from another '
    'initialisation and batch order, so gaps at or below it are as close to '
    'M* as retraining itself gets.')
REMEDIAL_NOTE = (
    'Remedial learning: D_new = retain ∪ the corrected (clean) forget '
    'images. D_new^(test) is the clean test set; D_new^(test,§) is '
    '`triggered_test`, every test image with the cross (the paper\'s '
    'metric); "crossed other classes" is `manipulation.affected`, the '
    'crossed test images of the 8 other classes, where the shortcut '
    'misleads. RELOAD, GAR and GRDA read the corrected images themselves; '
    'the other methods get D_new as their retain set.')


def write_reload_report(rows, workdir) -> list[str]:
  """Writes table_<scenario>.md, figure.png/.md and report.md into workdir;
  returns the paths written."""
  rows = [r for r in rows if r.get('study') == STUDY]
  groups = _groups(rows)
  report = base.Report(
      workdir, 'RELOAD: blind unlearning and remedial learning (§4)',
      f'{len(rows)} runs from `results.jsonl`, {len(groups)} scenario '
      'setting(s). Mean ± std over seeds.', '', NOTES, '')
  fig = figure(groups)
  if report.figure('figure', fig, figure_table(groups) if fig else None):
    report.image('figure.png', 'gaps to M*')
  several = _several(groups)
  for (scenario, setting_key), part in groups.items():
    title = SCENARIO_TITLES.get(scenario, scenario)
    stem = f'table_{scenario}'
    if scenario in several:
      title += f' [{setting_key}]'
      stem += f'_{setting_key}'
    lines = [f'## {title}', '', f'{_describe(part)}.', '']
    if any(r.get('remedial') for r in part):
      lines += [REMEDIAL_NOTE, '']
    lines += [scenario_table(part), '', 'Closest to M*:', '']
    lines += closest_to_retrain(part)
    report.write(stem + '.md', '\n'.join(lines))
    report.add(*lines, '')
  report.curves(rows, references=('original', 'retrain', 'retrain_rerun'))
  report.save()
  return report.written


main = base.cli(write_reload_report,
                'python -m unlearnjax.reports.reload --workdir=DIR.')

if __name__ == '__main__':
  main()
