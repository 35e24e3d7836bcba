"""Tables and figures of the PGU study (Hoang et al. 2024, §4).

From the study's results rows (mean ± std over seeds, the seed count in
each table's header), per part:

- removal (Table 1, Figs. 1-2) and class_removal (Table 2, Figs. 3-4): a
  table of methods × read-outs (accuracy on forget / retain / test, MIA AUC,
  mean output entropy on forget, seconds); a figure with the attack's ROC,
  the log-entropy histograms on forget of the original, retrained and PGU
  models, and (class removal) how the removed class's test samples are
  classified.
- incremental (Table 3, Figs. 5-6): accuracy on test and on each request's
  samples after every request, seconds per request; the ROC and entropy
  histogram after the last request.
- depoison (Table 4): test accuracy and clean-label accuracy on the flipped
  samples per flip budget for the poisoned M_o, the clean M* and every
  method.

Usage: python -m unlearnjax.reports.pgu --workdir=DIR
"""

from __future__ import annotations

import numpy as np

from unlearnjax.reports import base

STUDY = 'pgu'
REFERENCES = ('none', 'oracle')
# PGU's names where they differ from the registry's labels.
LABELS = base.Labels({'none': 'Original (M_o)', 'oracle': 'Clean (M*)',
                      'pgu_depoison': 'PGU'})
PART_LABELS = {('depoison', 'none'): 'Poisoned (M_o)',
               ('depoison', 'oracle'): 'Clean (M*)'}
VARIANT_SYMBOLS = {'energy_threshold': 'γ', 'entropy_weight': 'λ',
                   'batch_size': 'batch'}
# (row field, column header, scale, digits).
ACC = 100.0
REMOVAL_COLUMNS = (
    ('forget_accuracy', 'forget acc. (%)', ACC, 1),
    ('retain_accuracy', 'retain acc. (%)', ACC, 1),
    ('test_accuracy', 'test acc. (%)', ACC, 1),
    ('mia_auc', 'MIA AUC', 1.0, 3),
    ('forget_entropy_mean', 'entropy on forget (nats)', 1.0, 3),
    ('seconds', 'seconds', 1.0, 1))
CLASS_COLUMNS = (
    ('forget_accuracy', 'forget acc. (%)', ACC, 1),
    ('class_test_accuracy', 'class test acc. (%)', ACC, 1),
    ('retain_accuracy', 'retain acc. (%)', ACC, 1),
    ('retain_test_accuracy', 'retain-test acc. (%)', ACC, 1),
    ('retain_test_accuracy_masked', 'retain-test acc., class logit removed '
     '(%)', ACC, 1),
    ('mia_auc', 'MIA AUC', 1.0, 3),
    ('forget_entropy_mean', 'entropy on forget (nats)', 1.0, 3),
    ('seconds', 'seconds', 1.0, 1))
INCREMENTAL_METRICS = (
    ('test_accuracy', 'test acc. (%)', ACC, 1),
    ('retain_accuracy', 'retain acc. (%)', ACC, 1),
    ('forget_accuracy', "acc. on the request's samples (%)", ACC, 1),
    ('seconds', 'seconds', 1.0, 2))
DEPOISON_METRICS = (
    ('test_accuracy', 'Test accuracy (%)', ACC, 1),
    ('recovered_share', 'Share of the damage recovered, (acc. − poisoned) / '
     '(clean − poisoned) on test (%)', ACC, 0),
    ('forget_clean_accuracy', 'Clean-label accuracy on the flipped samples '
     '(%)', ACC, 1),
    ('seconds', 'Seconds', 1.0, 1))


# ----------------------------------------------------------------------------
# Rows
# ----------------------------------------------------------------------------


def _part(rows, part):
  return [r for r in rows if r.get('part') == part]


def _entries(rows) -> list[tuple[str, str | None]]:
  """(method, variant) in order: references first, then as they appear."""
  seen = []
  for ref in REFERENCES:
    if any(r['method'] == ref for r in rows):
      seen.append((ref, None))
  for r in rows:
    entry = (r['method'], r.get('variant'))
    if entry not in seen:
      seen.append(entry)
  return seen


def _label(part: str, method: str, variant: str | None) -> str:
  name = PART_LABELS.get((part, method)) or LABELS(method)
  if not variant:
    return name
  field, _, value = variant.partition('=')
  return f'{name} ({VARIANT_SYMBOLS.get(field, field)}={value})'


def _select(rows, method, variant, **where):
  return [r for r in rows if r['method'] == method
          and r.get('variant') == variant
          and all(r.get(k) == v for k, v in where.items())]


def _stat(rows, field):
  return base.mean_std([r.get(field) for r in rows])


def _has(rows, field) -> bool:
  return any(base.finite([r.get(field)]) for r in rows)


def _method(row):
  return row['method'], row.get('variant')


def _curve(rows, method, variant, axis, values, metric, scale):
  """Mean and std (times `scale`) of `metric` of one (method, variant) at
  each of `values` of `axis` (request, flip budget)."""
  return base.curve([[r.get(metric) for r in _select(
      rows, method, variant, **{axis: v})] for v in values], scale)


def recovered_share(row) -> float | None:
  """(test acc. − the poisoned M_o's) / (the clean M*'s − the poisoned
  M_o's), per seed: 0 = still poisoned, 1 = as if trained clean (PGU Table 4:
  from 50% at 5K flips to 91% at 25K)."""
  poisoned = row.get('poisoned_test_accuracy')
  clean = row.get('clean_test_accuracy')
  if poisoned is None or clean is None or clean <= poisoned:
    return None
  return (row['test_accuracy'] - poisoned) / (clean - poisoned)


# ----------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------


def method_table(rows, part: str, columns) -> str:
  """Markdown: one line per (method, variant), one column per read-out."""
  columns = [c for c in columns if _has(rows, c[0])]
  lines = []
  for method, variant in _entries(rows):
    chosen = _select(rows, method, variant)
    lines.append([_label(part, method, variant)] + [
        base.fmt(*_stat(chosen, field), scale, digits)
        for field, _, scale, digits in columns])
  return base.table(['method'] + [c[1] for c in columns], lines,
                    n=base.seed_count(rows, by=_method))


def sweep_table(rows, part: str, axis: str, axis_header, metric: str,
                scale: float, digits: int) -> str:
  """Markdown: one line per (method, variant), one column per `axis` value
  (request or flip budget)."""
  values = sorted({r[axis] for r in rows if r.get(axis) is not None})
  lines, shown = [], []
  for method, variant in _entries(rows):
    cells = [base.fmt(*_stat(_select(rows, method, variant, **{axis: v}),
                             metric), scale, digits) for v in values]
    if all(c == '–' for c in cells):
      continue
    lines.append([_label(part, method, variant)] + cells)
    shown += _select(rows, method, variant)
  return base.table(['method'] + [axis_header(v) for v in values], lines,
                    n=base.seed_count(shown, by=_method))


# ----------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------


def _roc_panel(ax, rows, part, entries) -> bool:
  drawn = False
  for method, variant in entries:
    chosen = [r for r in _select(rows, method, variant) if 'mia_roc_tpr' in r]
    if not chosen:
      continue
    tpr = np.mean([r['mia_roc_tpr'] for r in chosen], axis=0)
    auc, _ = _stat(chosen, 'mia_auc')
    ax.plot(chosen[0]['mia_roc_fpr'], tpr, drawstyle='steps-post',
            color=_color(method, variant, entries),
            label=f'{_label(part, method, variant)} ({auc:.2f})')
    drawn = True
  ax.plot([0, 1], [0, 1], color='0.6', linewidth=0.8, label='chance (0.50)')
  ax.set_xlabel('FPR')
  ax.set_ylabel('TPR')
  ax.set_title('Membership attack on forget (AUC)', fontsize=9)
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  return drawn


def _entropy_panel(ax, rows, part, entries, title) -> bool:
  drawn = False
  for method, variant in entries:
    chosen = [r for r in _select(rows, method, variant)
              if 'forget_log_entropy_counts' in r]
    if not chosen:
      continue
    counts = np.mean([np.asarray(r['forget_log_entropy_counts'], float)
                      / max(1, sum(r['forget_log_entropy_counts']))
                      for r in chosen], axis=0)
    edges = np.asarray(chosen[0]['forget_log_entropy_edges'])
    ax.stairs(counts, edges, label=_label(part, method, variant),
              linewidth=1.5, color=_color(method, variant, entries))
    drawn = True
  ax.set_xlabel('log entropy of the output on forget (ln nats)')
  ax.set_ylabel('share of forget samples')
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  return drawn


def _titled(fig, title, rows):
  fig.suptitle(f'{title} ({len(base.seeds(rows))} seed(s))')
  return fig


COLORS = {'none': 'k', 'oracle': 'tab:green', 'retrain': 'tab:green',
          'finetune': 'tab:blue', 'gd': 'tab:orange', 'ngd': 'tab:olive',
          'neggrad_plus': 'tab:purple', 'scrub': 'tab:cyan',
          'eu_k': 'tab:gray', 'cf_k': 'tab:olive'}
PGU_COLORS = ('tab:red', 'tab:pink', 'tab:brown', 'gold')


def _color(method, variant, entries) -> str | None:
  """One colour per method across panels; PGU variants in shades of red."""
  if method in ('pgu', 'pgu_depoison'):
    variants = [v for m, v in entries if m == method]
    return PGU_COLORS[variants.index(variant) % len(PGU_COLORS)]
  return COLORS.get(method)


def _pgu_entries(entries):
  return [e for e in entries if e[0] in ('none', 'retrain', 'pgu',
                                         'pgu_depoison')]


def removal_figure(rows, part: str, title: str):
  """ROC (Figs. 2, 3d), entropy histograms (Figs. 1, 3) and, for a class,
  the classes its test samples go to (Fig. 4)."""
  entries = _entries(rows)
  with_classes = _has(rows, 'class_test_accuracy')
  fig, axes = base.subplots(1, 3 if with_classes else 2,
                           figsize=(14 if with_classes else 10, 4.2))
  if not _roc_panel(axes[0], rows, part, entries):
    axes[0].text(0.5, 0.5, 'no attack (mia_models = 0)', ha='center')
  _entropy_panel(axes[1], rows, part, _pgu_entries(entries),
                 'Output entropy on forget')
  if with_classes:
    ax = axes[2]
    shown = [e for e in _pgu_entries(entries)
             if _select(rows, *e) and 'class_test_prediction_counts'
             in _select(rows, *e)[0]]
    width = 0.8 / max(1, len(shown))
    for i, (method, variant) in enumerate(shown):
      counts = np.mean([np.asarray(r['class_test_prediction_counts'], float)
                        / max(1, sum(r['class_test_prediction_counts']))
                        for r in _select(rows, method, variant)], axis=0)
      ax.bar(np.arange(counts.size) + i * width, 100 * counts, width,
             label=_label(part, method, variant),
             color=_color(method, variant, entries))
    ax.set_xticks(np.arange(len(rows[0]['class_test_prediction_counts']))
                  + 0.4 - width / 2)
    ax.set_xticklabels(range(len(rows[0]['class_test_prediction_counts'])))
    ax.set_xlabel('predicted class')
    ax.set_ylabel('% of the removed class\'s test samples')
    ax.set_title('Where the removed class goes (Fig. 4)', fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis='y')
  return _titled(fig, title, rows)


def incremental_figure(rows):
  """Test accuracy and accuracy on each request after every request (Table
  3), seconds per request; ROC and entropy after the last (Figs. 5-6)."""
  entries = _entries(rows)
  requests = sorted({r['request'] for r in rows})
  last = max(requests)
  fig, axes = base.subplots(1, 4, figsize=(19, 4.2))
  for ax, (metric, ylabel, scale, _) in zip(axes[:2], INCREMENTAL_METRICS[::2]
                                            ):
    for method, variant in entries:
      mean, std = _curve(rows, method, variant, 'request', requests, metric,
                         scale)
      if np.all(np.isnan(mean)):
        continue
      if method == 'none':   # the original, before any request
        ax.axhline(mean[0], color='k', linestyle='--',
                   label=_label('incremental', method, variant))
        continue
      keep = ~np.isnan(mean)
      ax.errorbar(np.asarray(requests)[keep], mean[keep], yerr=std[keep],
                  marker='o', capsize=3,
                  color=_color(method, variant, entries),
                  label=_label('incremental', method, variant))
    ax.set_xlabel('request')
    ax.set_ylabel(ylabel)
    ax.set_xticks(requests)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  at_end = [r for r in rows if r['request'] == last or r['method'] == 'none']
  if not _roc_panel(axes[2], at_end, 'incremental', entries):
    axes[2].text(0.5, 0.5, 'no attack (mia_models = 0)', ha='center')
  _entropy_panel(axes[3], at_end, 'incremental', entries,
                 f'Output entropy on all removed samples after request {last}')
  return _titled(fig, 'Incremental removal (PGU §4.4)', rows)


def depoison_figure(rows):
  """Table 4 as curves: accuracy against the flip budget."""
  fractions = sorted({r['flip_fraction'] for r in rows})
  x = [100 * f for f in fractions]
  fig, axes = base.subplots(1, 2, figsize=(11, 4.2))
  entries = _entries(rows)
  for ax, (metric, ylabel, scale, _) in zip(axes, (DEPOISON_METRICS[0],
                                                   DEPOISON_METRICS[2])):
    for method, variant in entries:
      mean, std = _curve(rows, method, variant, 'flip_fraction', fractions,
                         metric, scale)
      if np.all(np.isnan(mean)):
        continue
      ax.errorbar(x, mean, yerr=std, marker='o', capsize=3,
                  color=_color(method, variant, entries),
                  linestyle='--' if method in REFERENCES else '-',
                  label=_label('depoison', method, variant))
    ax.set_xlabel('labels flipped (% of every paired class)')
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  return _titled(fig, 'De-poisoning pairwise label flips (PGU §4.5)', rows)


# ----------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------


def _describe(rows) -> str:
  first = rows[0]
  n = sorted({r.get('n_forget') for r in rows if r.get('n_forget')})
  return (f'{first["dataset"]}, model {first["model"]}, |forget| = '
          f'{"/".join(str(v) for v in n)}, seeds {base.seeds(rows)}')


def _pgu_facts(rows) -> list[str]:
  """How PGU's runs stopped (its early-stopping rule decides a lot here)."""
  pgu_rows = [r for r in rows if r['method'] in ('pgu', 'pgu_depoison')]
  if not pgu_rows:
    return []
  lines = []
  for method, variant in _entries(pgu_rows):
    chosen = _select(pgu_rows, method, variant)
    reasons = {}
    for r in chosen:
      reason = r.get('method_pgu_stop_reason')
      reasons[reason] = reasons.get(reason, 0) + 1
    steps, _ = _stat(chosen, 'method_pgu_steps')
    kept, _ = _stat(chosen, 'method_pgu_kept_epoch')
    lines.append(f'- {_label(rows[0]["part"], method, variant)}: stop '
                 + ', '.join(f'{k} ×{v}' for k, v in sorted(reasons.items(),
                                                            key=str))
                 + f'; mean {steps:.0f} steps, kept epoch {kept:.1f} '
                 '(0 = the original model unchanged).')
  return ['PGU runs:', ''] + lines + ['']


def write_pgu_report(rows, workdir) -> list[str]:
  """Writes <part>.md and <part>.png per part and report.md into workdir;
  returns the paths written."""
  rows = [r for r in rows if r.get('study') == STUDY]
  report = base.Report(
      workdir, 'Projected-Gradient Unlearning (Hoang et al. 2024), §4',
      f'{len(rows)} runs from `results.jsonl`. Mean ± std over seeds. '
      'MIA AUC: PGU\'s attack (a classifier on sorted log-softmax outputs '
      'on forget, fitted on models trained with and without forget) scoring '
      'the model\'s forget outputs against held-out models trained without '
      'forget; 0.5 = indistinguishable from retraining. Entropy: mean output '
      'entropy on forget.', '')

  sections = []
  part = _part(rows, 'removal')
  if part:
    sections.append(('removal', 'Random sample removal (§4.2, Table 1, '
                     'Figs. 1-2)', part,
                     [method_table(part, 'removal', REMOVAL_COLUMNS)],
                     removal_figure(part, 'removal',
                                    'Random sample removal (PGU §4.2)')))
  part = _part(rows, 'class_removal')
  if part:
    label = part[0].get('forget_class')
    sections.append(('class_removal', f'Class removal, class {label} (§4.3, '
                     'Table 2, Figs. 3-4)', part,
                     [method_table(part, 'class_removal', CLASS_COLUMNS)],
                     removal_figure(part, 'class_removal',
                                    f'Class {label} removal (PGU §4.3)')))
  part = _part(rows, 'incremental')
  if part:
    tables = []
    for metric, header, scale, digits in INCREMENTAL_METRICS:
      tables += [f'**{header}** after each request (request 0: the original '
                 'before any)',
                 sweep_table(part, 'incremental', 'request', str, metric,
                             scale, digits)]
    last = max(r['request'] for r in part)
    at_end = [r for r in part if r['request'] == last or r['method'] == 'none']
    tables += [f'**After request {last}**, on every removed sample',
               method_table(at_end, 'incremental', (
                   ('removed_accuracy', 'acc. on removed (%)', ACC, 1),
                   ('mia_auc', 'MIA AUC', 1.0, 3),
                   ('forget_entropy_mean', 'entropy on removed (nats)', 1.0,
                    3)))]
    sections.append(('incremental', 'Incremental removal (§4.4, Table 3, '
                     'Figs. 5-6)', part, tables,
                     incremental_figure(part)))
  part = _part(rows, 'depoison')
  if part:
    part = [{**r, 'recovered_share': recovered_share(r)} for r in part]
    tables = []
    for metric, header, scale, digits in DEPOISON_METRICS:
      tables += [f'**{header}**', sweep_table(
          part, 'depoison', 'flip_fraction', lambda f: f'{100 * f:g}% flipped',
          metric, scale, digits)]
    sections.append(('depoison', 'De-poisoning label flips (§4.5, Table 4)',
                     part, tables, depoison_figure(part)))

  for stem, title, part, tables, fig in sections:
    body = [f'({_describe(part)}.)', '']
    body += [t for table in tables for t in (table, '')]
    body += _pgu_facts(part)
    body += [f'![{title}]({stem}.png)', '']
    # <stem>.md: the section on its own (its tables are the plotted numbers).
    report.figure(stem, fig, '\n'.join([f'# {title}', ''] + body))
    report.section(title, *body)
  report.curves(rows)
  report.save()
  return report.written


main = base.cli(write_pgu_report,
                'python -m unlearnjax.reports.pgu --workdir=DIR.')

if __name__ == '__main__':
  main()
