r"""PTN search: vectorised against sequential, and PTN+XLF against retraining.

  python bench/ptn.py                          # small_cnn on BadNet digits
  python bench/ptn.py --model=vit_tiny         # the tiny ViT
  python bench/ptn.py --candidates=16,64 --repeats=5

On one trained model and one poisoned data set (the embedded digits, BadNet,
|S_m| = 25, the potion study's recipe) it times, for a few forget sets:
the importances (I_D over the training data, I_f), the PTN search run
sequentially (one candidate s per call, Potion Alg. 1) and vectorised
(`--candidates` per vmapped call), checks both pick the same s, and retraining
on the retain set. Every timing is taken after a warm-up call (no compile
time). Prints one Markdown table with the device named. A benchmark, never a
test: it measures, it asserts nothing but the equal picks.
"""

import dataclasses
import os
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from unlearnjax import data, forget as forget_lib, models, training  # pylint: disable=g-import-not-at-top,wrong-import-position
from unlearnjax.manipulations import get_manipulation  # pylint: disable=g-import-not-at-top,wrong-import-position
from unlearnjax.unlearn import UnlearnTask, ptn  # pylint: disable=g-import-not-at-top,wrong-import-position

_MODEL = flags.DEFINE_string('model', 'small_cnn', 'small_cnn or vit_tiny')
_POISONS = flags.DEFINE_integer('poisons', 25, '|S_m| (BadNet)')
_STEPS = flags.DEFINE_integer('steps', 600, 'training steps (original and '
                              'retrain)')
_CANDIDATES = flags.DEFINE_list('candidates', ['16', '64'],
                                'candidates per vectorised call')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'timed repeats (median)')
_IMPORTANCE = flags.DEFINE_string('importance', 'xlf', 'fisher, lf or xlf')


def _median_seconds(fn, repeats):
  fn()  # warm-up: compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    out = fn()
    jax.block_until_ready(jax.tree.leaves(out.params))
    times.append(time.perf_counter() - start)
  return float(np.median(times)), out


def main(argv):
  del argv
  device = f'{jax.devices()[0].device_kind} x{jax.device_count()}'
  train, test = data.load_dataset('digits')
  train, validation = data.carve_validation(train, 0.1, 0)
  manipulation = get_manipulation('badnet')(train, test, seed=0,
                                            num_poisons=_POISONS.value)
  kwargs = {'width': 16} if _MODEL.value == 'small_cnn' else {}
  model = models.get_model(_MODEL.value, 10, **kwargs)
  recipe = training.Recipe(steps=_STEPS.value, batch_size=128,
                           learning_rate=0.05 if _MODEL.value == 'small_cnn'
                           else 1e-3,
                           optimizer='sgd' if _MODEL.value == 'small_cnn'
                           else 'adamw')
  original = training.fit(model, recipe, manipulation.train,
                          jax.random.key(0))
  cache = {}
  rows = []
  for fraction in (0.2, 1.0, forget_lib.ONE_SHOT):
    forget = forget_lib.sample_forget(manipulation.manipulated, fraction, 0)
    task = UnlearnTask(model=model, original=original,
                       train=manipulation.train, forget=forget,
                       retain=forget_lib.retain_indices(
                           len(manipulation.train), forget),
                       validation=validation, recipe=recipe, cache=cache)
    hparams = ptn.PTNHparams(importance=_IMPORTANCE.value)
    (i_train, _), (i_forget, _) = ptn.importances(task, hparams)
    # Importances timed afresh (the cache kept the first, compiling, call).
    start = time.perf_counter()
    ptn.importances(dataclasses.replace(task, cache={}), hparams)
    importance_seconds = time.perf_counter() - start

    def run(vectorised, per_call):
      h = dataclasses.replace(hparams, vectorised=vectorised,
                              candidates_per_call=per_call)
      return lambda: ptn.search(model, original, i_train, i_forget,
                                task.forget_split, len(task.train), h)

    sequential_seconds, sequential = _median_seconds(run(False, 1),
                                                     _REPEATS.value)
    vectorised = {}
    for per_call in map(int, _CANDIDATES.value):
      seconds, result = _median_seconds(run(True, per_call), _REPEATS.value)
      if result.index != sequential.index:
        raise AssertionError(f'vectorised ({per_call}) picked s index '
                             f'{result.index}, sequential {sequential.index}')
      vectorised[per_call] = seconds
    start = time.perf_counter()
    training.fit(model, recipe, manipulation.train, jax.random.key(1),
                 indices=task.retain)
    retrain_seconds = time.perf_counter() - start
    total = importance_seconds + min([sequential_seconds,
                                      *vectorised.values()])
    rows.append((fraction, task.forget.size, sequential.index + 1,
                 importance_seconds, sequential_seconds, vectorised,
                 retrain_seconds, total))

  per_call_cols = ' | '.join(f'vectorised ×{c} (s)' for c in _CANDIDATES.value)
  print(f'\nPTN+{_IMPORTANCE.value.upper()} on {_MODEL.value}, BadNet digits '
        f'|S_m|={_POISONS.value}, {_STEPS.value} steps; device: {device}; '
        f'median of {_REPEATS.value}\n')
  print(f'| found | \\|S_f\\| | tries | importances (s) | sequential search '
        f'(s) | {per_call_cols} | retrain (s) | PTN total / retrain |')
  print('|' + '---|' * (7 + len(_CANDIDATES.value)))
  for (fraction, n_forget, tries, imp, seq, vec, retrain_s, total) in rows:
    vec_cols = ' | '.join(f'{vec[int(c)]:.3f}' for c in _CANDIDATES.value)
    print(f'| {fraction} | {n_forget} | {tries} | {imp:.2f} | {seq:.3f} | '
          f'{vec_cols} | {retrain_s:.1f} | {100 * total / retrain_s:.1f}% |')


if __name__ == '__main__':
  app.run(main)
