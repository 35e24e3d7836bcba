r"""Many runs per compiled call against one at a time (issue 10).

  python bench/many_runs.py                 # the corrective default's shapes
  python bench/many_runs.py --repeats=3 --runs=4,8

Times, on the corrective default (small CNN width 16, 8x8 digits, 600
steps of 128), after a warm-up that compiles both paths:
  * `fit` for K runs one after another against `training.fit_many`
    (Retrain over K found fractions, M_o beside M*);
  * SCRUB's Goel grid (8 α, 150 steps) through `scrub.unlearn` one
    configuration at a time against `scrub.unlearn_many`,
and checks the two give the same variables. Prints a Markdown table (device
named). A benchmark: it measures, it asserts nothing.
"""

import os
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..'))

from unlearnjax import data, forget as forget_lib, models, training, tuning  # pylint: disable=g-import-not-at-top,wrong-import-position
from unlearnjax.unlearn import UnlearnTask, scrub  # pylint: disable=g-import-not-at-top,wrong-import-position

_RUNS = flags.DEFINE_list('runs', ['4'], 'runs per fit comparison')
_REPEATS = flags.DEFINE_integer('repeats', 2, 'timed repeats (median)')
_STEPS = flags.DEFINE_integer('steps', 600, 'recipe steps')


def _same(a, b) -> bool:
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _median_seconds(fn, repeats):
  times, out = [], None
  for _ in range(repeats):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times)), (min(times), max(times)), out


def main(_):
  train, _ = data.load_dataset('digits')
  train, validation = data.carve_validation(train, 0.1, seed=0)
  model = models.get_model('small_cnn', 10, width=16)
  recipe = training.Recipe(steps=_STEPS.value, batch_size=128,
                           learning_rate=0.05)
  rows = []
  for k in map(int, _RUNS.value):
    keys = [jax.random.key(i) for i in range(k)]
    indices = [np.arange(len(train))[i * 13:] for i in range(k)]
    one = lambda: [training.fit(model, recipe, train, key, indices=r)
                   for key, r in zip(keys, indices)]
    many = lambda: training.fit_many(model, recipe, train, keys,
                                     indices=indices)
    one(), many()  # compile both
    t_one, s_one, a = _median_seconds(one, _REPEATS.value)
    t_many, s_many, b = _median_seconds(many, _REPEATS.value)
    rows.append((f'fit x{k} ({recipe.steps} steps)', t_one, s_one, t_many,
                 s_many, all(map(_same, a, b))))

  original = training.fit(model, recipe, train, jax.random.key(0))
  forget = np.arange(0, 26)
  task = UnlearnTask(model=model, original=original, train=train,
                     forget=forget,
                     retain=forget_lib.retain_indices(len(train), forget),
                     validation=validation, recipe=recipe)
  grid = scrub.goel_grid(task)
  key = jax.random.key(3)
  one = lambda: [scrub.unlearn(task, h, key) for h in grid]
  many = lambda: scrub.unlearn_many(task, grid, key)
  one(), many()
  t_one, s_one, a = _median_seconds(one, _REPEATS.value)
  t_many, s_many, b = _median_seconds(many, _REPEATS.value)
  rows.append((f'SCRUB grid x{len(grid)}', t_one, s_one, t_many, s_many,
               all(map(_same, a, b))))

  device = f'{jax.devices()[0].device_kind} x{jax.device_count()}'
  print(f'\ndevice: {device}; runs per call: '
        f'{tuning.runs_per_call(64)}; median of {_REPEATS.value}\n')
  print('| runs | one at a time (s) | together (s) | speed-up | same '
        'variables |')
  print('|---|---|---|---|---|')
  for name, t1, s1, t2, s2, same in rows:
    print(f'| {name} | {t1:.1f} ({s1[0]:.1f}–{s1[1]:.1f}) | {t2:.1f} '
          f'({s2[0]:.1f}–{s2[1]:.1f}) | {t1 / t2:.2f}× | {same} |')


if __name__ == '__main__':
  app.run(main)
