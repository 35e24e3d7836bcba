r"""Poison generation time per 100 poisons (Pawelczyk et al. A.1.1 / A.1.3):
gradient matching (Witches' Brew, Alg. 1) and gradient canceling (Alg. 2).

  python bench/poisons.py                          # small_cnn, 32x32 digits
  python bench/poisons.py --poisons=200 --matching_steps=240 --restarts=8

Times the crafting loops only (`gradient_matching.craft_perturbations`,
`gradient_canceling.corrupt_parameters` + `cancel_gradients`) on a fixed,
untrained surrogate (the cost does not depend on the weights; surrogate
training is `training.fit`, timed by bench/speed.py). Each timing follows a
warm-up call with the same shapes and settings (no compile time); median of
`--repeats`. Prints one Markdown table with the device named. A benchmark,
never a test.
"""

import os
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from unlearnjax import data, models, training  # pylint: disable=g-import-not-at-top,wrong-import-position
from unlearnjax.manipulations import gradient_canceling as gc  # pylint: disable=g-import-not-at-top,wrong-import-position
from unlearnjax.manipulations import gradient_matching as gm  # pylint: disable=g-import-not-at-top,wrong-import-position

_IMAGE_SIZE = flags.DEFINE_integer('image_size', 32, 'digits side (8k)')
_WIDTH = flags.DEFINE_integer('width', 16, 'small_cnn width')
_POISONS = flags.DEFINE_integer('poisons', 100, 'poisons crafted per call')
_TARGETS = flags.DEFINE_integer('targets', 4, 'gradient matching: targets '
                                '(the poisons are split over them)')
_RESTARTS = flags.DEFINE_integer('restarts', 2, 'gradient matching: R')
_MATCHING_STEPS = flags.DEFINE_integer('matching_steps', 20,
                                       'gradient matching: M per restart')
_CANCELING_STEPS = flags.DEFINE_integer('canceling_steps', 20,
                                        'gradient canceling: steps on Δ')
_CORRUPTION_STEPS = flags.DEFINE_integer('corruption_steps', 20,
                                         'GradPC ascent steps (θ_low)')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'timed repeats (median)')


def _median_seconds(fn, repeats):
  jax.block_until_ready(fn())  # warm-up: compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def main(argv):
  del argv
  device = f'{jax.devices()[0].device_kind} x{jax.device_count()}'
  train, _ = data.load_dataset('digits', image_size=_IMAGE_SIZE.value)
  model = models.get_model('small_cnn', 10, width=_WIDTH.value)
  variables = training.init_variables(model, jax.random.key(0),
                                      train.image_shape)
  rng = np.random.default_rng(0)
  shape = f'digits {"x".join(map(str, train.image_shape))}'
  rows = []

  # Gradient matching: T targets × P/T poisons, R restarts, M Adam steps.
  targets = _TARGETS.value
  per_target = max(1, _POISONS.value // targets)
  adversarial = (np.arange(targets) % 10).astype(np.int32)
  base = np.stack([train.images[rng.choice(np.flatnonzero(
      train.labels == a), per_target, replace=False)] for a in adversarial])
  target_images = train.images[rng.choice(len(train), targets,
                                          replace=False)]
  config = gm.CraftingConfig(
      epsilon=gm.PAPER_EPSILON, bounds=(0.0, 1.0),
      steps=_MATCHING_STEPS.value,
      max_shift=gm.default_max_shift(train.image_shape[0]))
  seconds = _median_seconds(lambda: gm.craft_perturbations(
      model, variables, base, adversarial, target_images,
      key=jax.random.key(1), config=config,
      restarts=_RESTARTS.value).perturbations, _REPEATS.value)
  n = targets * per_target
  rows.append(('gradient matching', f'{targets} targets × {per_target}',
               f'{_MATCHING_STEPS.value} × {_RESTARTS.value} restarts',
               seconds, 100 * seconds / n))

  # Gradient canceling: GradPC for θ_low, then the steps on Δ.
  images, labels = train.images, train.labels
  seconds = _median_seconds(lambda: gc.corrupt_parameters(
      model, variables, images, labels, parameter_bound=0.03,
      steps=_CORRUPTION_STEPS.value, step_size_fraction=0.25)[0]['params'],
                            _REPEATS.value)
  rows.append(('GradPC (θ_low)', f'{len(train)} clean rows',
               f'{_CORRUPTION_STEPS.value}', seconds, float('nan')))
  _, clean_gradient = gc.mean_gradient(model, variables, images, labels)
  take = rng.choice(len(train), _POISONS.value, replace=False)
  config = gc.CancelingConfig(
      epsilon=float('inf'), bounds=(0.0, 1.0), poison_gradient_weight=1.0,
      num_poisons=_POISONS.value, step_size=0.01, optimizer='adam')
  seconds = _median_seconds(lambda: gc.cancel_gradients(
      model, variables, clean_gradient, images[take], labels[take],
      config=config, steps=_CANCELING_STEPS.value)[0], _REPEATS.value)
  rows.append(('gradient canceling', f'{_POISONS.value}',
               f'{_CANCELING_STEPS.value}', seconds,
               100 * seconds / _POISONS.value))

  print(f'\nPoison generation, small_cnn (width {_WIDTH.value}) on {shape}, '
        f'untrained surrogate; device: {device}; median of '
        f'{_REPEATS.value}, warm-up excluded\n')
  print('| poison | poisons | steps | seconds | seconds per 100 poisons |')
  print('|---|---|---|---|---|')
  for name, poisons, steps, seconds, per_100 in rows:
    per_100 = '—' if np.isnan(per_100) else f'{per_100:.2f}'
    print(f'| {name} | {poisons} | {steps} | {seconds:.2f} | {per_100} |')


if __name__ == '__main__':
  app.run(main)
