"""Tables and figures of the Potion study (Schoepf et al.) from its results.

Reads only the rows of `results.jsonl` (study 'potion'), so everything can be
regenerated with `python -m unlearnjax.reports.potion --workdir=DIR`
(every table says over how many seeds its means are):

* `table1.md`: Potion Table 1 — poison healed and model damage, mean ± std
  over the found-fraction scenarios and over one-shot healing, one table per
  manipulation, plus a finer table per |S_m|.
* `figure10.png/.md`: Potion Fig. 10 — both metrics against the found
  fraction, one line per method, one-shot at x = "1" (one sample).
* `rho_sensitivity.png/.md`: Potion Fig. 8/9 — PTN against ρ (the
  over-forgetting buffer), when the study ran its ρ part.
* `timing.png/.md`: Potion Fig. 11 — PTN importance / search / total time
  against one SSD configuration, Goel's SSD grid and retraining.
* `report.md`: all of the above.

Every part tolerates partial results: absent methods, manipulations or parts
are left out, NaN values are skipped in means.
"""

from __future__ import annotations

import collections
import math

import numpy as np

from unlearnjax import manipulations
from unlearnjax.reports import base
from unlearnjax.reports import corrective as corrective_report

STUDY = 'potion'
# Potion Table 1 order: best first, the original model last.
METHODS = ('ptn_xlf', 'ptn_xlf_exact', 'ptn_lf', 'ptn_ssd', 'ssd', 'retrain')
PTN_METHODS = ('ptn_xlf', 'ptn_xlf_exact', 'ptn_lf', 'ptn_ssd')
# Potion's names where they differ from the registry's labels.
LABELS = base.Labels({'none': 'None (M_o)', 'oracle': 'Oracle M*',
                      'retrain': 'EU (retrain)', 'ssd': 'SSD (Goel grid)'})
METHOD_COLORS = {'ptn_xlf': 'tab:red', 'ptn_xlf_exact': 'tab:brown',
                 'ptn_lf': 'tab:orange',
                 'ptn_ssd': 'tab:purple', 'ssd': 'tab:blue',
                 'retrain': 'tab:green'}
MANIPULATION_LABELS = {'badnet': 'BadNet', 'sinusoid': 'Sinusoidal signal',
                       'moving': 'Moving trigger'}
MANIPULATION_ORDER = ('badnet', 'sinusoid', 'moving')
ONE_SHOT_TICK = '1'  # Potion Fig. 10 labels one-shot healing |S_f| = 1


def _manipulation_label(manipulation):
  # Potion's own short names first, then the registry's label.
  return MANIPULATION_LABELS.get(manipulation) or manipulations.label(
      manipulation)


def _float(value):
  if value is None:
    return math.nan
  try:
    return float(value)
  except (TypeError, ValueError):
    return math.nan


def _healed(row):
  """Poison healed (%) of a row; computed from the accuracies only if the
  key is missing (a NaN value stays NaN and is skipped in means)."""
  if row.get('poison_healed') is not None:
    return _float(row['poison_healed'])
  corr, oracle = _float(row.get('acc_corr')), _float(row.get('oracle_acc_corr'))
  return 100.0 * corr / oracle if oracle > 0 else math.nan


def _damage(row):
  """Model damage (points); the original model M_o has none by definition."""
  if row.get('method') == 'none':
    return 0.0
  return _float(row.get('model_damage'))


def _is_grid(row):
  return row.get('found_fraction') is not None and not row.get('one_shot')


def _part(rows, part):
  return [r for r in rows if r.get('part', 'main') == part]


def _by_manipulation(rows):
  groups = collections.defaultdict(list)
  for r in rows:
    groups[r.get('manipulation')].append(r)
  return {m: groups[m] for m in base.ordered(groups, MANIPULATION_ORDER)}


def _methods(rows):
  """Unlearning methods present (not 'none'/'oracle'), in Table 1 order."""
  return base.ordered(
      {r.get('method') for r in rows} - {'none', 'oracle', None}, METHODS)


def _present(group):
  """The lines of Table 1: the methods present, then 'none' if present."""
  return _methods(group) + (
      ['none'] if any(r.get('method') == 'none' for r in group) else [])


def _seed_count(rows, methods):
  """'n = 2 seeds' of the rows of `methods` (the lines of a table)."""
  return base.seed_count([r for r in rows if r.get('method') in methods],
                         by=lambda r: r.get('method'))


def _scenario_values(rows, method, kind):
  """(poison healed, model damage) lists of one method for kind 'grid' or
  'one_shot'. 'none' has one row per setting and seed, used for both."""
  if method == 'none':
    chosen = [r for r in rows if r.get('method') == 'none']
  elif kind == 'grid':
    chosen = [r for r in rows if r.get('method') == method and _is_grid(r)]
  else:
    chosen = [r for r in rows if r.get('method') == method and r.get('one_shot')]
  return [_healed(r) for r in chosen], [_damage(r) for r in chosen]


def _describe(rows):
  """'dataset/model' pairs of some rows, for table captions."""
  pairs = sorted({f'{r.get("dataset")}/{r.get("model")}' for r in rows})
  return ', '.join(pairs)


# ---------------------------------------------------------------- Table 1


def table1(rows) -> str:
  """Potion Table 1 per manipulation, then poison healed / damage per |S_m|."""
  main = _part(rows, 'main')
  groups = _by_manipulation(main)
  if not groups:
    return 'No rows of the main part yet.\n'
  out = [('Poison healed = 100·Acc_corr(M_u)/Acc_corr(M*) (%, higher is '
         'better); model damage = Acc_retain(M_u) − Acc_retain(M_o) '
         '(percentage points, negative = damage). Mean ± std over scenarios: '
         '"found fractions" pools every |S_m|, found fraction and seed; '
         '"one-shot" pools every |S_m| and seed with |S_f| = 1. "None" is the '
         'original model M_o (one value per |S_m| and seed, no unlearning).'),
         '']
  for manipulation, group in groups.items():
    out.append(f'### {_manipulation_label(manipulation)} '
               f'({_describe(group)})')
    out.append('')
    lines, counts = [], []
    present = _present(group)
    for method in present:
      healed_g, damage_g = _scenario_values(group, method, 'grid')
      healed_o, damage_o = _scenario_values(group, method, 'one_shot')
      lines.append([LABELS(method)] + [
          base.cell(v, digits=2)
          for v in (healed_g, damage_g, healed_o, damage_o)])
      n_g, n_o = base.count(healed_g), base.count(healed_o)
      if method == 'none':
        counts.append(f'{LABELS(method)} {n_g} (settings × seeds, same values '
                      'in both groups)')
      else:
        skipped = len(healed_g) - n_g + len(healed_o) - n_o
        counts.append(f'{LABELS(method)} {n_g} / {n_o}'
                      + (f' ({skipped} NaN poison-healed values skipped)'
                         if skipped else ''))
    out.append(base.table(
        ['method', 'Poison healed (found fractions)',
         'Model damage (found fractions)', 'Poison healed (one-shot)',
         'Model damage (one-shot)'], lines, n=_seed_count(group, present)))
    out.append('')
    out.append('n (scenarios per mean, found fractions / one-shot): '
               + '; '.join(counts) + '.')
    out.append('')
    out.append(_size_table(group))
  return '\n'.join(out) + '\n'


def _size_table(group) -> str:
  """Poison healed and model damage per |S_m| (found fractions only)."""
  sizes = sorted({r['n_manipulated'] for r in group
                  if r.get('n_manipulated') is not None})
  if not sizes:
    return ''
  header = ['method']
  for s in sizes:
    header += [f'Poison healed (\\|S_m\\|={s})',
               f'Model damage (\\|S_m\\|={s})']
  lines = []
  present = _present(group)
  for method in present:
    cells = []
    for size in sizes:
      rows = [r for r in group if r.get('n_manipulated') == size]
      healed, damage = _scenario_values(rows, method, 'grid')
      cells.append(f'{base.cell(healed, digits=2)} (n={base.count(healed)})')
      cells.append(base.cell(damage, digits=2))
    lines.append([LABELS(method)] + cells)
  return '\n'.join([
      'Per manipulation size \\|S_m\\| (found fractions only; "None": the '
      'original model), mean ± std (n per cell):', '',
      base.table(header, lines, n=_seed_count(group, present))]) + '\n'


# ---------------------------------------------------------------- Figure 10


def _level(rows, method):
  """Mean poison healed of 'none' or 'oracle' rows (NaN if none)."""
  return base.mean_std([_healed(r) for r in rows
                        if r.get('method') == method])[0]


def figure10(rows):
  """Potion Fig. 10: poison healed and model damage against the fraction
  (None without rows of the main part)."""
  groups = _by_manipulation(_part(rows, 'main'))
  if not groups:
    return None
  fig, axes = base.subplots(2, len(groups), figsize=(5.2 * len(groups), 7.6),
                            squeeze=False)
  for col, (manipulation, group) in enumerate(groups.items()):
    fractions = sorted({float(r['found_fraction']) for r in group
                        if _is_grid(r)})
    for row_i, (value_fn, ylabel) in enumerate(
        ((_healed, 'poison healed (%)'), (_damage, 'model damage (points)'))):
      ax = axes[row_i][col]
      for method in _methods(group):
        series = base.by_found_fraction(group, method, value_fn)
        xs = sorted(x for x in series if x != 'one-shot')
        stats = [base.mean_std(series[x]) for x in xs]
        color = METHOD_COLORS.get(method)
        if xs:
          line = ax.errorbar(xs, [m for m, _ in stats],
                             yerr=[s for _, s in stats], marker='o', ms=3,
                             capsize=2, color=color, label=LABELS(method))
          color = line[0].get_color()
        if 'one-shot' in series:
          mean, std = base.mean_std(series['one-shot'])
          ax.errorbar([0.0], [mean], yerr=[std], marker='*', ms=9, capsize=2,
                      color=color, ls='none',
                      label=None if xs else LABELS(method))
      if row_i == 0:
        for method, style in (('none', '--'), ('oracle', ':')):
          level = _level(group, method)
          if not math.isnan(level):
            ax.axhline(level, ls=style, color='k', lw=1, label=LABELS(method))
      elif any(r.get('method') == 'none' for r in group):
        ax.axhline(0.0, ls='--', color='k', lw=1, label=LABELS('none'))
      ticks = [0.0] + fractions
      ax.set_xticks(ticks)
      ax.set_xticklabels([ONE_SHOT_TICK] + [f'{f:.1f}' for f in fractions],
                         fontsize=8)
      ax.set_xlim(-0.07, 1.05)
      ax.set_ylabel(ylabel)
      ax.grid(alpha=0.3)
      if row_i == 0:
        ax.set_title(f'{_manipulation_label(manipulation)} '
                     f'({_describe(group)})', fontsize=10)
      else:
        ax.set_xlabel('found fraction |S_f|/|S_m|  ("1": one sample, ★)')
  handles, _labels = axes[0][-1].get_legend_handles_labels()
  if handles:
    axes[0][-1].legend(fontsize=8, loc='best')
  return fig


def figure10_table(rows) -> str:
  """The numbers behind Fig. 10: mean ± std over |S_m| sizes and seeds."""
  groups = _by_manipulation(_part(rows, 'main'))
  out = []
  for manipulation, group in groups.items():
    columns = base.found_fraction_columns(group)
    names = [f'{ONE_SHOT_TICK} (one-shot)' if c == 'one-shot' else f'{c:g}'
             for c in columns]
    sizes = sorted({r.get('n_manipulated') for r in group
                    if r.get('n_manipulated') is not None})
    for value_fn, metric in ((_healed, 'Poison healed (%)'),
                             (_damage, 'Model damage (points)')):
      out.append(f'**{_manipulation_label(manipulation)} ({_describe(group)})'
                 f'** — {metric} against the found fraction, mean ± std over '
                 f'|S_m| {sizes} and seeds {base.seeds(group)}\n')
      lines = []
      references = ('none', 'oracle') if value_fn is _healed else ()
      for method in references:
        mean, std = base.mean_std([_healed(r) for r in group
                                   if r.get('method') == method])
        if not math.isnan(mean):
          lines.append([LABELS(method)] + [base.fmt(mean, std)] * len(columns))
      methods = _methods(group)
      for method in methods:
        series = base.by_found_fraction(group, method, value_fn)
        lines.append([LABELS(method)] + [
            base.cell(series.get(c, []), digits=2) for c in columns])
      out.append(base.table(['method'] + names, lines, n=_seed_count(
          group, [*references, *methods])))
      out.append('')
  return '\n'.join(out)


# ---------------------------------------------------------------- ρ (Fig. 8/9)


def _rho(row):
  rho = row.get('rho')
  if rho is None:
    rho = (row.get('hparams') or {}).get('over_forgetting_buffer')
  return _float(rho)


def _rho_groups(rows):
  """manipulation -> (ρ rows, main-part reference rows of the same settings)."""
  rho_rows = [r for r in _part(rows, 'rho') if not math.isnan(_rho(r))]
  main = _part(rows, 'main')
  out = {}
  for manipulation, group in _by_manipulation(rho_rows).items():
    keys = {r.get('setting_key') for r in group}
    fractions = {r.get('found_fraction') for r in group}
    reference = [r for r in main if r.get('setting_key') in keys
                 and r.get('manipulation') == manipulation
                 and (r.get('method') == 'none'
                      or (_is_grid(r) and r.get('found_fraction') in fractions))]
    out[manipulation] = (group, reference)
  return out


def rho_figure(rows):
  """Potion Fig. 8/9: poison healed and model damage of PTN against ρ (None
  without rows of the ρ part)."""
  groups = _rho_groups(rows)
  if not groups:
    return None
  fig, axes = base.subplots(len(groups), 2, figsize=(11, 3.9 * len(groups)),
                            squeeze=False)
  for row_i, (manipulation, (group, reference)) in enumerate(groups.items()):
    for col, (value_fn, ylabel) in enumerate(
        ((_healed, 'poison healed (%)'), (_damage, 'model damage (points)'))):
      ax = axes[row_i][col]
      for method in _methods(group):
        per_rho = collections.defaultdict(list)
        for r in group:
          if r.get('method') == method:
            per_rho[_rho(r)].append(value_fn(r))
        xs = sorted(per_rho)
        stats = [base.mean_std(per_rho[x]) for x in xs]
        means = np.array([m for m, _ in stats])
        stds = np.array([s for _, s in stats])
        color = METHOD_COLORS.get(method)
        line, = ax.plot(xs, means, marker='o', ms=3, color=color,
                        label=LABELS(method))
        ax.fill_between(xs, means - stds, means + stds, alpha=0.2,
                        color=line.get_color())
      for method, style in (('none', '--'), ('ssd', ':')):
        values = [value_fn(r) for r in reference if r.get('method') == method]
        level = base.mean_std(values)[0]
        if not math.isnan(level):
          ax.axhline(level, ls=style, color='k', lw=1,
                     label=f'{LABELS(method)} (main part)')
      ax.set_xlabel('ρ (over-forgetting buffer)')
      ax.set_ylabel(ylabel)
      ax.set_title(f'{_manipulation_label(manipulation)} ({_describe(group)})',
                   fontsize=10)
      ax.grid(alpha=0.3)
    axes[row_i][0].legend(fontsize=8, loc='best')
  return fig


def rho_table(rows) -> str:
  """ρ × method: poison healed and model damage, mean ± std over scenarios."""
  groups = _rho_groups(rows)
  if not groups:
    return ''
  out = [('Sensitivity to the over-forgetting buffer ρ (Potion Fig. 8/9): '
         'poison healed (%) / model damage (points), mean ± std over the '
         'scenarios of the ρ part (|S_m| sizes, found fractions and seeds); '
         'n per cell in brackets.'), '']
  for manipulation, (group, reference) in groups.items():
    methods = _methods(group)
    rhos = sorted({_rho(r) for r in group})
    sizes = sorted({r.get('n_manipulated') for r in group
                    if r.get('n_manipulated') is not None})
    out.append(f'### {_manipulation_label(manipulation)} ({_describe(group)}, '
               f'|S_m| {sizes})')
    out.append('')
    header = ['ρ']
    for m in methods:
      header += [f'{LABELS(m)} poison healed', f'{LABELS(m)} model damage']
    lines = []
    for rho in rhos:
      cells = []
      for method in methods:
        chosen = [r for r in group
                  if r.get('method') == method and _rho(r) == rho]
        healed = [_healed(r) for r in chosen]
        cells.append(f'{base.cell(healed, digits=2)} (n={base.count(healed)})')
        cells.append(base.cell([_damage(r) for r in chosen], digits=2))
      lines.append([f'{rho:g}'] + cells)
    out.append(base.table(header, lines, n=_seed_count(group, methods)))
    refs = []
    for method in ('none', 'ssd'):
      chosen = [r for r in reference if r.get('method') == method]
      if chosen:
        refs.append(f'{LABELS(method)} '
                    f'{base.cell([_healed(r) for r in chosen], digits=2)}'
                    f' / {base.cell([_damage(r) for r in chosen], digits=2)}'
                    f' (n={len(chosen)})')
    if refs:
      out.append('')
      out.append('Reference on the same settings and found fractions from the '
                 'main part (dashed/dotted lines in the figure): '
                 + '; '.join(refs) + '.')
    out.append('')
  return '\n'.join(out)


# ---------------------------------------------------------------- Fig. 11


def _timing_size(rows, timing_size):
  sizes = sorted({r['n_manipulated'] for r in rows
                  if r.get('n_manipulated') is not None})
  if timing_size is not None:
    return timing_size
  if not sizes:
    return None
  return sizes[(len(sizes) - 1) // 2]  # the median (lower one if even)


def _timing_groups(rows, size):
  """(dataset, model) -> timed rows of the main part at |S_m| = size."""
  groups = collections.defaultdict(list)
  if size is None:
    return {}
  for r in _part(rows, 'main'):
    if (r.get('n_manipulated') == size
        and r.get('method') not in ('none', 'oracle', None)):
      groups[(r.get('dataset'), r.get('model'))].append(r)
  return dict(sorted(groups.items(), key=lambda kv: str(kv[0])))


def _timing_entries(group):
  """[(key, label, values)] of the timing bars of one (dataset, model)."""
  entries = []
  for method in PTN_METHODS:
    chosen = [r for r in group if r.get('method') == method]
    if not chosen:
      continue
    importance = [_float(r.get('importance_train_seconds'))
                  + _float(r.get('importance_forget_seconds')) for r in chosen]
    search = [_float(r.get('search_seconds')) for r in chosen]
    total = [i + s for i, s in zip(importance, search)]
    entries += [((method, 'importance'), (f'{LABELS(method)} importance '
                 '(I_D + I_f)'), importance),
                ((method, 'search'), f'{LABELS(method)} search', search),
                ((method, 'total'), f'{LABELS(method)} total', total)]
  ssd = [r for r in group if r.get('method') == 'ssd']
  if ssd:
    entries.append((('ssd', 'single'), 'SSD single config',
                    [_float(r.get('seconds_per_config')) for r in ssd]))
    configs = base.mean_std([_float(r.get('num_configs_tried'))
                             for r in ssd])[0]
    entries.append((('ssd', 'grid'), 'SSD Goel grid'
                    + (f' ({configs:.0f} configs)' if not math.isnan(configs)
                       else ''), [_float(r.get('seconds')) for r in ssd]))
  retrain = [r for r in group if r.get('method') == 'retrain']
  if retrain:
    entries.append((('retrain', 'total'), 'EU (retrain)',
                    [_float(r.get('seconds')) for r in retrain]))
  return entries


_COMPONENT_COLORS = {'importance': 'tab:cyan', 'search': 'tab:olive',
                     'total': 'tab:red', 'single': 'tab:blue',
                     'grid': 'tab:purple'}


def timing_figure(rows, timing_size=None):
  """Potion Fig. 11: mean seconds per method at one |S_m| (bars ± std; None
  without timed rows)."""
  size = _timing_size(_part(rows, 'main'), timing_size)
  groups = {k: _timing_entries(g)
            for k, g in _timing_groups(rows, size).items()}
  groups = {k: e for k, e in groups.items() if e}
  if not groups:
    return None
  fig, axes = base.subplots(1, len(groups), figsize=(7.5 * len(groups), 4.4),
                            squeeze=False)
  for ax, ((dataset, model), entries) in zip(axes[0], groups.items()):
    width = 0.27
    ticks, tick_labels, used = [], [], set()
    position = 0.0
    by_method = collections.OrderedDict()
    for (method, component), label, values in entries:
      by_method.setdefault(method if method in PTN_METHODS else label, []).append(
          (method, component, values))
    for name, parts in by_method.items():
      offsets = (np.arange(len(parts)) - (len(parts) - 1) / 2) * width
      for offset, (method, component, values) in zip(offsets, parts):
        mean, std = base.mean_std(values)
        if math.isnan(mean):
          continue
        if method == 'retrain':
          color, legend = METHOD_COLORS['retrain'], None
        else:
          color = _COMPONENT_COLORS.get(component)
          legend = component if method in PTN_METHODS else None
        legend = legend if legend not in used else None
        used.add(legend)
        ax.bar(position + offset, mean, width * 0.95,
               yerr=None if math.isnan(std) else std, capsize=2, color=color,
               label=legend)
        ax.annotate(f'{mean:.2g}', (position + offset, mean), ha='center',
                    va='bottom', fontsize=7, xytext=(0, 2),
                    textcoords='offset points')
      ticks.append(position)
      tick_labels.append(LABELS(name) if name in PTN_METHODS else name)
      position += 1.0
    ax.set_xticks(ticks)
    ax.set_xticklabels(tick_labels, fontsize=8, rotation=15)
    ax.set_ylabel('seconds (mean ± std)')
    ax.set_title(f'{dataset}/{model}, |S_m| = {size}', fontsize=10)
    ax.grid(alpha=0.3, axis='y')
    if any(label for label in used):
      ax.legend(fontsize=8, loc='upper left', title='PTN time')
  return fig


def timing_table(rows, timing_size=None) -> str:
  """Seconds per method at one |S_m|, PTN totals as % of retraining."""
  main = _part(rows, 'main')
  size = _timing_size(main, timing_size)
  groups = {k: (g, _timing_entries(g))
            for k, g in _timing_groups(rows, size).items()}
  groups = {k: v for k, v in groups.items() if v[1]}
  if not groups:
    return ''
  out = [(f'Unlearning times (Potion Fig. 11) at |S_m| = {size}, mean ± std '
         'seconds over the runs of the main part at that size (all '
         'manipulations, found fractions, one-shot and seeds).'), '',
         ('PTN importance time = I_D (train) + I_f (forget) importance seconds; '
         'these are what computing them took once: I_D is cached per original '
         'model and shared by all found fractions, so the seconds of a whole '
         'method call can be smaller than importance + search. Total = '
         'importance + search. "SSD single config" is one configuration of '
         'Goel\'s grid (seconds / configs tried). All times depend on the '
         'device (CPU or GPU) and include first-call JIT compilation, so early '
         'runs of a process can be slower.'), '']
  for (dataset, model), (group, entries) in groups.items():
    retrain = base.mean_std([v for key, _, values in entries
                             if key == ('retrain', 'total') for v in values])[0]
    out.append(f'### {dataset}/{model}')
    out.append('')
    lines = []
    for _, label, values in entries:
      mean, std = base.mean_std(values)
      share = ('–' if math.isnan(retrain) or retrain <= 0 or math.isnan(mean)
               else f'{100 * mean / retrain:.1f}%')
      lines.append([label, base.fmt(mean, std, digits=2), base.count(values),
                    share])
    out.append(base.table(['time', 'seconds', 'n', '% of EU (retrain)'], lines,
                          n=base.seed_count(group)))
    tries = []
    for method in PTN_METHODS:
      chosen = [_float(r.get('ptn_tries')) for r in group
                if r.get('method') == method]
      if chosen:
        tries.append(f'{LABELS(method)} {base.cell(chosen)}')
    if tries:
      out.append('')
      out.append('PTN search steps per run (mean ± std): ' + '; '.join(tries)
                 + '.')
    out.append('')
  return '\n'.join(out)


# ---------------------------------------------------------------- report


def report_options(config) -> dict:
  """What the report reads from the study's config (`cli.study_script`)."""
  return {'timing_size': config.get('timing_size') or None}


def write_potion_report(rows, workdir, timing_size=None) -> list[str]:
  """Writes table1.md, figure10.png/.md, rho_sensitivity.png/.md,
  timing.png/.md and report.md into workdir; returns the paths written."""
  rows = [r for r in rows if r.get('study') == STUDY]
  report = base.Report(
      workdir, 'Potion: poison unlearning with PTN and XLF (Schoepf et al.)',
      f'{len(rows)} runs of the potion study from `results.jsonl` ('
      f'{base.tally(rows, lambda r: r.get("part", "main"))}).', '')
  tab1 = table1(rows)
  report.write('table1.md', tab1)
  report.section('Table 1: poison healed and model damage', tab1)
  fig10 = figure10(rows)
  if fig10:
    report.figure('figure10', fig10, figure10_table(rows))
    report.section(
        'Figure 10: results against the found fraction',
        'Poison healed (top) and model damage (bottom) against the found '
        'fraction |S_f|/|S_m| per manipulation, one line per method (mean '
        'over |S_m| sizes and seeds), one-shot healing as a star at "1", the '
        'original M_o and the oracle M* as horizontal lines.', '')
    report.image('figure10.png', 'Figure 10')
    report.add('Numbers: [figure10.md](figure10.md).', '')
  rho_md = rho_table(rows)
  if rho_md:
    report.section(
        'Figure 8/9: sensitivity to ρ',
        'Poison healed (left) and model damage (right) of the PTN methods '
        'against the over-forgetting buffer ρ, mean ± std band over '
        'scenarios, with M_o and SSD (Goel grid) of the same scenarios as '
        'reference lines.', '')
    if report.figure('rho_sensitivity', rho_figure(rows), rho_md):
      report.image('rho_sensitivity.png', 'Sensitivity to ρ')
    report.add(rho_md, '')
  timing_md = timing_table(rows, timing_size)
  if timing_md:
    report.section(
        'Figure 11: unlearning time',
        'Mean seconds of PTN importance, search and total per PTN method '
        'against one SSD configuration, Goel\'s SSD grid and retraining (EU) '
        'at one |S_m|.', '')
    if report.figure('timing', timing_figure(rows, timing_size), timing_md):
      report.image('timing.png', 'Timing')
    report.add(timing_md, '')
  corrective_report.expansion_section(report, rows, STUDY)
  report.curves(rows)
  report.save()
  return report.written


# argparse, not absl flags: this module can share a process with any other
# flag-defining module.
main = base.cli(
    write_potion_report,
    'python -m unlearnjax.reports.potion --workdir=DIR [--timing_size=N].',
    options={'timing_size': dict(
        type=int, default=None,
        help='|S_m| of the timing figure (default: the median size present)')})


if __name__ == '__main__':
  main()
