r"""PTN+XLF over a Potion study's found fractions: the reference's loop vs
unlearnjax's sweep (issue 10, "Done means" 1).

The runs of one Potion scenario at ResNet-9 scale: BadNet digits 32x32x3,
|S_m| = 26, the same trained Potion ResNet-9 on both sides (the harness's
`prep_weights.py`), found fractions 0.1..1.0 and one-shot (|S_f| = 1): 11
runs, as the Potion study runs them for one (manipulation, size, seed).

* reference: for each run, `methods.XALFSSD(...).unlearn(...)` exactly as
  Potion's main.py calls it (I_D over the retain loader, batch 512, ρ = 0.2,
  MAX_TRY 500), i.e. an importance pass over D_r per run;
* unlearnjax: `ptn.unlearn` for each run on tasks that share one cache, as
  the study's group of runs on one M_o does, for each configuration in
  CONFIGS: `ptn_xlf` (the authors' per-batch estimate over D_r: one pass
  per run, no sharing possible), `ptn_xlf_exact` (the library's variant:
  exact, I_D over S_tr, one pass for all runs) and exact over D_r (derived
  from the one S_tr pass: I_{D_r} = I_{S_tr} − I_{S_f}, counts weighted).

Each side is timed end to end in this process, compilation included (JAX's
first run compiles), one pass over the 11 runs; the single-run rows are the
median run of the loop. Needs the harness (`../shared/bench-reference/`,
its README's venv and PROJ/REF/OUT) for the reference and the weights:

  PROJ=$PWD REF=... REF_SSD=... OUT=... BENCH_REF=../shared/bench-reference \
    $PY bench/ptn_fractions.py            # SIDES=reference,unlearnjax
"""

import copy
import json
import os
import sys
import time

sys.path.insert(0, os.environ.get('BENCH_REF', os.path.join(
    os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared',
    'bench-reference')))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..'))

import common  # noqa: E402  (the harness's)
from common import jax, np  # noqa: E402

RHO = 0.2
FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
CONFIGS = {
    'ptn_xlf (authors: per_batch, I_D over D_r)': dict(
        estimator='per_batch', importance_data='retain'),
    'ptn_xlf_exact (exact, I_D over S_tr)': dict(
        estimator='exact', importance_data='train'),
    'exact, I_D over D_r (derived from S_tr)': dict(
        estimator='exact', importance_data='retain'),
}


def forget_sets(manipulation):
  from unlearnjax import forget as forget_lib
  sets = [(f, forget_lib.sample_forget(manipulation.manipulated, f, 0))
          for f in FRACTIONS]
  sets.append((forget_lib.ONE_SHOT, forget_lib.sample_forget(
      manipulation.manipulated, forget_lib.ONE_SHOT, 0)))
  return sets


def reference_loop(manipulation, sets):
  methods = common.ref_methods()
  tmodel = common.load_trained_torch()
  train = manipulation.train
  from unlearnjax import forget as forget_lib
  workdir = os.path.join(common.OUT, 'ref_cwd')
  os.makedirs(workdir, exist_ok=True)
  os.chdir(workdir)
  runs = []
  start = time.perf_counter()
  for fraction, forget in sets:
    retain = forget_lib.retain_indices(len(train), forget)
    frac_dl = len(forget) / len(train) / 25  # main.py
    retain_loader = common.potion_loader(train.images, train.labels, retain,
                                         512)
    forget_loader = common.potion_loader(train.images, train.labels, forget,
                                         512)
    with common.quiet():
      method = methods.XALFSSD(common.ref_opt(), copy.deepcopy(tmodel))
      one = time.perf_counter()
      method.unlearn(train_loader=retain_loader, test_loader=None,
                     forget_loader=forget_loader, frac_dl=frac_dl,
                     min_acc_val=RHO)
    runs.append({'fraction': fraction, 'n_forget': int(len(forget)),
                 's': time.perf_counter() - one})
    print('reference', runs[-1], flush=True)
  return {'total_s': time.perf_counter() - start, 'runs': runs}


def unlearnjax_loop(manipulation, validation, sets, changes):
  from unlearnjax import forget as forget_lib, training
  from unlearnjax.unlearn import UnlearnTask, ptn
  tmodel = common.load_trained_torch()
  original = common.torch_to_flax_variables(tmodel)
  model = common.PotionResNet9(10)
  recipe = training.Recipe(steps=60, batch_size=64)
  train = manipulation.train
  hparams = ptn.PTNHparams(importance='xlf', importance_batch_size=512,
                           over_forgetting_buffer=RHO, **changes)
  cache, runs = {}, []
  start = time.perf_counter()
  for fraction, forget in sets:
    task = UnlearnTask(model=model, original=original, train=train,
                       forget=forget,
                       retain=forget_lib.retain_indices(len(train), forget),
                       validation=validation, recipe=recipe, cache=cache)
    one = time.perf_counter()
    result = ptn.unlearn(task, hparams, jax.random.key(0))
    jax.block_until_ready(jax.tree.leaves(result.variables))
    info = result.info
    runs.append({'fraction': fraction, 'n_forget': int(len(forget)),
                 's': time.perf_counter() - one,
                 'importance_spent_s': info['importance_spent_seconds'],
                 'search_s': info['search_seconds'],
                 'tries': info['ptn_tries'],
                 'reached': info['ptn_reached_threshold']})
    print(changes, runs[-1], flush=True)
  return {'total_s': time.perf_counter() - start, 'runs': runs}


def main():
  sides = os.environ.get('SIDES', 'reference,unlearnjax').split(',')
  manipulation, validation = common.badnet_digits32()
  sets = forget_sets(manipulation)
  out = {'fractions': [str(f) for f, _ in sets], 'rho': RHO}
  if 'reference' in sides:
    out['reference'] = reference_loop(manipulation, sets)
  if 'unlearnjax' in sides:
    only = os.environ.get('CONFIGS')
    for label, changes in CONFIGS.items():
      if only and not any(label.startswith(c) for c in only.split(',')):
        continue
      out[label] = unlearnjax_loop(manipulation, validation, sets, changes)
  path = os.path.join(common.OUT, 'ptn_fractions.json')
  if os.path.exists(path):  # keep the other side's earlier numbers
    with open(path) as f:
      earlier = json.load(f)
    out = {**earlier, **out}
  common.save('ptn_fractions', out)
  summary(out)


def summary(out):
  ref = out.get('reference')
  print('| PTN+XLF, 10 found fractions + one-shot | total | median run |'
        ' ratio ref/this (total, median run) |')
  print('|---|---|---|---|')
  for label, side in out.items():
    if not isinstance(side, dict) or 'runs' not in side:
      continue
    median = float(np.median([r['s'] for r in side['runs']]))
    ratio = ''
    if ref and side is not ref:
      ref_median = float(np.median([r['s'] for r in ref['runs']]))
      ratio = (f"{ref['total_s'] / side['total_s']:.2f}× / "
               f'{ref_median / median:.2f}×')
    print(f"| {label} | {side['total_s']:.1f} s | {median:.1f} s | {ratio} |")


if __name__ == '__main__':
  main()
