"""Figures (PNG) and Markdown tables of the why-unlearning-fails study
(Pawelczyk et al. 2024, §6, App. C) from its results rows alone.

* `write_model_shift`: Hypothesis 1, Fig. 4 (model shift of exact unlearning,
  poisons against as many random clean samples, ℓ1 and ℓ2, per β).
* `write_gradient_alignment`: Hypothesis 2, Fig. 5 (cosine between clean
  gradient steps and the desired shift, distances left, a histogram).
* `write_report`: both, and `report.md` with the study's deviations from the
  paper.

Rebuild from a workdir (every shard, diverged rows left out):

  python -m unlearnjax.reports.why_fails --workdir=DIR
"""

from __future__ import annotations

import math

import numpy as np

from unlearnjax.reports import base

POISONS = ('badnet', 'ic', 'gaussian')
FORGET_SETS = ('poison', 'random')
POISON_LABELS = {'badnet': 'BadNet (library; trigger + relabel)',
                 'ic': 'Interclass confusion (library; label flips)',
                 'gaussian': 'Gaussian (paper §4.3, in feature space)'}
MODEL_SHIFT_TITLE = ('Hypothesis 1: model shift (Pawelczyk et al. §6, Fig. 4; '
                     'App. C.1)')
ALIGNMENT_TITLE = ('Hypothesis 2: gradient alignment (Pawelczyk et al. §6, '
                   'Fig. 5; App. C.2)')


def _fmt(mean, std=None, digits=3):
  """Significant digits (the shifts span orders of magnitude): '9.28 ± 0.11'."""
  if math.isnan(mean):
    return '–'
  if std is None or math.isnan(std):
    return f'{mean:.{digits}g}'
  return f'{mean:.{digits}g} ± {std:.{digits - 1}g}'


def _cell(values, digits=3):
  return _fmt(*base.mean_std(values), digits=digits)


def _ratio(numerator, denominator):
  return numerator / denominator if denominator else math.nan


def _finished(rows, part):
  return [r for r in rows if r.get('part') == part and not r.get('diverged')]


# ----------------------------------------------------- Hypothesis 1 (Fig. 4)


def model_shift_markdown(rows, level: int = 1) -> str:
  """Fig. 4's numbers: per poison, a table over β of the ℓ1 / ℓ2 shifts of
  removing the poisons and as many random clean samples (mean ± std over
  seeds, with the seed count), and the accuracies around them."""
  h = '#' * level
  lines = [f'{h} {MODEL_SHIFT_TITLE}', '',
           'Logistic regression (multinomial, L2, solved to ‖∇f‖ < tol by '
           'L-BFGS) on the fixed penultimate features of a small CNN trained '
           'on the clean digits. ‖θ(S_corr) − θ(S_corr \\ S_poison^(β))‖ '
           '(poisons removed) vs ‖θ(S_corr) − θ(S_corr \\ S_rand^(β))‖ (as '
           'many random clean samples removed); mean ± std over seeds.', '']
  for kind in base.ordered({r['poison'] for r in rows}, POISONS):
    krows = [r for r in rows if r['poison'] == kind]
    betas = sorted({r['beta'] for r in krows})
    ref = krows[0]
    lines += [f'{h}# {POISON_LABELS.get(kind, kind)}', '',
              f'S_corr: {ref["n_train"]} samples, {ref["n_poisons"]} of them '
              f'poisons; feature dim {ref["feature_dim"]}, l2 = '
              f'{ref["l2"]:g}, {len(base.seeds(krows))} seed(s); max ‖∇f‖ at '
              f'the optima {max(r["grad_norm_max"] for r in krows):.1e} (tol '
              f'{ref["tol"]:g}).', '']
    full = [r for r in krows if r['beta'] == max(betas)]
    lines.append(f'Test accuracy of θ(S_corr): '
                 f'{_cell(r["acc_test_corr"] for r in krows)}; after removing '
                 f'{max(betas):.0%} of the poisons: '
                 f'{_cell(r["acc_test_unlearned"] for r in full)}.')
    if ref.get('acc_affected_corr') is not None:
      lines.append(f'Accuracy on the affected test set D_m: θ(S_corr) '
                   f'{_cell(r["acc_affected_corr"] for r in krows)}; after '
                   f'removing {max(betas):.0%}: '
                   f'{_cell(r["acc_affected_unlearned"] for r in full)}.')
    table_lines = []
    for b in betas:
      br = [r for r in krows if r['beta'] == b]
      cells = [f'{b:.0%}', str(br[0]['n_removed'])]
      for norm in ('l1', 'l2'):
        cells += [_cell(r[f'shift_poison_{norm}'] for r in br),
                  _cell(r[f'shift_random_{norm}'] for r in br),
                  _cell(_ratio(r[f'shift_poison_{norm}'],
                               r[f'shift_random_{norm}']) for r in br)]
      table_lines.append(cells)
    lines += ['', base.table(
        ['β', 'removed', 'ℓ1 poisons', 'ℓ1 random', 'ratio ℓ1', 'ℓ2 poisons',
         'ℓ2 random', 'ratio ℓ2'], table_lines,
        n=base.seed_count(krows, by=lambda r: r['beta'])), '']
  return '\n'.join(lines)


def model_shift_figure(rows):
  """Fig. 4: model shift against β, poisons vs random clean samples, ℓ1
  (top) and ℓ2 (bottom), one column per poison; bands are ± std."""
  kinds = base.ordered({r['poison'] for r in rows}, POISONS)
  fig, axes = base.subplots(2, len(kinds), figsize=(4.2 * len(kinds), 6.4),
                            squeeze=False)
  for col, kind in enumerate(kinds):
    krows = [r for r in rows if r['poison'] == kind]
    betas = sorted({r['beta'] for r in krows})
    for row_i, norm in enumerate(('l1', 'l2')):
      ax = axes[row_i, col]
      for what, color, label in (('poison', 'tab:red', 'poisons removed'),
                                 ('random', 'tab:orange',
                                  'random clean removed')):
        stats = [base.mean_std(r[f'shift_{what}_{norm}'] for r in krows
                               if r['beta'] == b) for b in betas]
        mean = np.array([s[0] for s in stats])
        std = np.array([s[1] for s in stats])
        xs = 100 * np.array(betas)
        ax.plot(xs, mean, 'o-', color=color, label=label, ms=3)
        ax.fill_between(xs, mean - std, mean + std, color=color, alpha=0.2)
      ax.set_xlabel('β: share of the poisons unlearnt (%)')
      ax.set_ylabel(f'model shift (ℓ{norm[1]})')
      ax.grid(alpha=0.3)
      if row_i == 0:
        ax.set_title(POISON_LABELS.get(kind, kind), fontsize=9)
        ax.legend(fontsize=8)
  fig.suptitle('Model shift of exact unlearning: poisons vs random clean '
               'samples (logistic regression on fixed CNN features)',
               fontsize=10)
  return fig


def write_model_shift(rows, workdir) -> list[str]:
  """model_shift.png (Fig. 4) and its twin model_shift.md; [] without rows."""
  rows = _finished(rows, 'model_shift')
  if not rows:
    return []
  path = f'{workdir}/model_shift.png'
  return base.save_figure(model_shift_figure(rows), path,
                          model_shift_markdown(rows))


# ----------------------------------------------------- Hypothesis 2 (Fig. 5)


def _bands(ax, curves, color, label, style='-'):
  arr = np.asarray(curves, dtype=float)
  mean, std = arr.mean(0), arr.std(0)
  steps = np.arange(arr.shape[1])
  ax.plot(steps, mean, style, color=color, label=label, lw=1)
  ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2)


def gradient_alignment_figure(rows):
  """Fig. 5 (a, b): cos(g_t, v) per step for both forget sets, blue from
  θ(S_corr), red from θ_random; (c) the distance left to the target, and its
  low-variance part; (d) a histogram of the mini-batch cosines."""
  by = {f: [r for r in rows if r['forget'] == f] for f in FORGET_SETS}
  titles = {'poison': '(a) S_poison: Gradient Canceling poisons',
            'random': '(b) S_poison: random clean samples (equal ℓ1 shift)'}
  fig, axes = base.subplots(2, 2, figsize=(11, 7.5))
  for i, forget in enumerate(FORGET_SETS):
    ax = axes[0, i]
    frows = by[forget]
    if not frows:
      continue
    _bands(ax, [r['curves']['cos_minibatch'] for r in frows], 'tab:blue',
           'v_blue = θ(S_corr) − θ(S_corr∖S_poison)')
    _bands(ax, [r['red_curves']['cos_minibatch'] for r in frows], 'tab:red',
           'v_red = θ_random − θ(S_corr∖S_poison)')
    _bands(ax, [r['curves']['cos_full'] for r in frows], 'navy',
           'v_blue, full clean gradient', style='--')
    ax.axhline(0, color='k', lw=0.5)
    ax.set_title(titles[forget], fontsize=9)
    ax.set_xlabel('step t of gradient descent on clean data')
    ax.set_ylabel('⟨v, g_t⟩ / ‖v‖‖g_t‖')
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
  ax = axes[1, 0]
  for forget, color in (('poison', 'tab:blue'), ('random', 'tab:green')):
    if by[forget]:
      _bands(ax, [np.asarray(r['curves']['dist_l2']) / r['curves']['dist_l2'][0]
                  for r in by[forget]], color, f'{forget}: ‖θ_t − θ*‖₂ / ‖v‖₂')
      _bands(ax, [np.asarray(r['curves']['dist_low'])
                  / r['curves']['dist_l2'][0] for r in by[forget]], color,
             f'{forget}: low-variance part', style=':')
  ax.set_xlabel('step t')
  ax.set_ylabel('remaining distance to θ(S_corr∖S_poison), relative')
  ax.set_title('(c) distance left to the unlearning target', fontsize=9)
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  ax = axes[1, 1]
  for forget, color in (('poison', 'tab:blue'), ('random', 'tab:green')):
    if by[forget]:
      values = np.concatenate([r['curves']['cos_minibatch']
                               for r in by[forget]])
      ax.hist(values, bins=60, alpha=0.5, color=color, density=True,
              label=f'{forget}: cos(g_t, v_blue)')
  ax.set_xlabel('cosine similarity')
  ax.set_title('(d) histogram over all steps and seeds', fontsize=9)
  ax.legend(fontsize=7)
  fig.suptitle('Clean-gradient directions vs the desired unlearning shift '
               '(synthetic linear regression, App. C.2)', fontsize=10)
  return fig


def gradient_alignment_markdown(rows, level: int = 1) -> str:
  """Fig. 5's numbers per forget set (mean ± std over seeds, with the seed
  count), and the Gradient Canceling attack's own effect."""
  by = {f: [r for r in rows if r['forget'] == f] for f in FORGET_SETS}
  ref = rows[0]
  intro = (f'Synthetic ridge regression: N = {ref["n"]}, d = {ref["dim"]}, '
           f'signal coordinates k = {ref["signal_dim"]}, l2 = {ref["l2"]:g}; '
           f'{len(base.seeds(by["poison"]))} seed(s). Gradient descent on the '
           'clean data from θ(S_corr) (blue) or from a random initialisation '
           '(red); v = desired shift. "low share" = share of ‖v‖₂² in the '
           'low-variance coordinates k+1..d. Mean ± std over seeds.')
  table_lines = []
  for forget in FORGET_SETS:
    frows = by[forget]
    if not frows:
      continue
    col = lambda k, rs=frows: [r[k] for r in rs]  # pylint: disable=unnecessary-lambda-assignment
    mean = lambda k, rs=frows: _fmt(base.mean_std(col(k, rs))[0])  # pylint: disable=unnecessary-lambda-assignment
    table_lines.append([
        'GC poisons' if forget == 'poison' else 'random clean (w2 half)',
        _cell(col('n_forget'), digits=4), _cell(col('shift_l1')),
        _cell(col('shift_l2')), _cell(col('shift_low_share')),
        _cell(col('cos_minibatch_first10')), _cell(col('cos_minibatch_mean')),
        _cell(col('cos_full_first')), _cell(col('red_cos_minibatch_first10')),
        f'{mean("dist_start")} → {mean("dist_end")}',
        f'{mean("dist_low_start")} → {mean("dist_low_end")}'])
  lines = [f'{"#" * level} {ALIGNMENT_TITLE}', '', intro, '', base.table(
      ['forget set', 'size of S_f', '‖v‖₁', '‖v‖₂', 'low share',
       'cos(g_t, v) first 10', 'cos(g_t, v) all', 'cos(full ∇, v) at t=0',
       'red cos first 10', '‖θ_t − θ*‖₂ start → end',
       'low part start → end'], table_lines,
      n=base.seed_count(rows, by=lambda r: r['forget']))]
  prow = by['poison']
  if prow:
    lines += ['', (
        f'Gradient Canceling loss (Eq. 4): '
        f'{_cell(r["gc_loss_start"] for r in prow)} → '
        f'{_cell(r["gc_loss_end"] for r in prow)}. Test MSE: clean '
        f'θ(S_corr∖S_poison) {_cell(r["test_mse_clean"] for r in prow)}, '
        f'poisoned θ(S_corr) {_cell(r["test_mse_corr"] for r in prow)}, '
        f'GradPC target θ_low {_cell(r["test_mse_low"] for r in prow)}.')]
  return '\n'.join(lines)


def write_gradient_alignment(rows, workdir) -> list[str]:
  """gradient_alignment.png (Fig. 5 plus distances and a histogram) and its
  twin gradient_alignment.md; [] without rows."""
  rows = _finished(rows, 'gradient_alignment')
  if not rows:
    return []
  path = f'{workdir}/gradient_alignment.png'
  return base.save_figure(gradient_alignment_figure(rows), path,
                          gradient_alignment_markdown(rows))


# --------------------------------------------------------------- report.md

TITLE = 'Why unlearning fails to remove poisons (Pawelczyk et al. 2024, §6, App. C)'
INTRO = """Reproduced at a small scale with `experiments/why_fails.py`; every number
below comes from the results rows in this folder (rebuild with
`python -m unlearnjax.reports.why_fails --workdir=DIR`).

Deviations from the paper:

* Hypothesis 1 (Fig. 4): the features are the penultimate activations of a
  small CNN trained on the clean scikit-learn digits (not a CIFAR-10
  ResNet-18), and the poisons are stand-ins: the library's BadNet and
  interclass-confusion (label-flip) poisons through the fixed extractor, and
  the paper's Gaussian poisons added in feature space, instead of Gradient
  Canceling and Witch's Brew, which this library does not craft. The random
  baseline removes clean samples of the same S_corr.
* Hypothesis 2 (Fig. 5): App. C.2's data at full size, ridge-regularised
  (θ(S) is the closed-form ridge solution; the paper trains "from scratch"
  without saying how); GradPC is projected gradient ascent on the test loss;
  Gradient Canceling follows Eq. 4 with η and the 500 epochs of App. C.2, by
  full-batch steps. θ_random (red) is read as a fresh U(−1/√d, 1/√d)
  initialisation. The full-batch cosine is shown besides the paper's
  mini-batch one.
"""


def write_report(rows, workdir) -> str:
  """Writes both figures with their Markdown twins and `report.md` (the
  intro, then each part's tables and figure); returns report.md's path.
  Diverged rows (`diverged: true`) are left out."""
  report = base.Report(workdir, TITLE, INTRO)
  for part, stem, markdown, figure, alt in (
      ('model_shift', 'model_shift', model_shift_markdown, model_shift_figure,
       'Fig. 4: model shift'),
      ('gradient_alignment', 'gradient_alignment',
       gradient_alignment_markdown, gradient_alignment_figure,
       'Fig. 5: gradient alignment')):
    part_rows = _finished(rows, part)
    if not part_rows:
      continue
    report.figure(stem, figure(part_rows), markdown(part_rows))
    report.add(markdown(part_rows, level=2), '')
    report.image(f'{stem}.png', alt)
  report.curves()  # the extractor's training: no method has steps
  return report.save()


def main(argv=None):
  """python -m unlearnjax.reports.why_fails --workdir=DIR: rebuilds the
  figures, tables and report.md from the workdir's finished rows."""
  base.rebuild_main(write_report, argv, description=main.__doc__)


if __name__ == '__main__':
  main()
