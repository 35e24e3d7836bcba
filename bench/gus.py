r"""GUS time per 1000 samples (Pawelczyk et al. Alg. 3/4): the per-sample input
gradients (vmap) of the poisons' clean base images, dotted with their noise.

  python bench/gus.py                     # small_cnn on 32x32 digits, ResNet-9
  python bench/gus.py --models=small_cnn --samples=2000

Times `metrics.gus.input_gradient_scores` on `--samples` images after a
warm-up call (no compile time), median of `--repeats`, and reports seconds
per 1000 samples, with the device named. A benchmark, never a test.
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
from unlearnjax.metrics import gus  # pylint: disable=g-import-not-at-top,wrong-import-position

_MODELS = flags.DEFINE_list('models', ['small_cnn', 'resnet9'], 'what to time')
_SAMPLES = flags.DEFINE_integer('samples', 1000, 'poisons scored per call')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'timed repeats (median)')


def main(argv):
  del argv
  device = f'{jax.devices()[0].device_kind} x{jax.device_count()}'
  rng = np.random.default_rng(0)
  rows = []
  for name in _MODELS.value:
    if name == 'small_cnn':
      train, _ = data.load_dataset('digits', image_size=32)
      take = rng.choice(len(train), _SAMPLES.value,
                        replace=_SAMPLES.value > len(train))
      images, labels = train.images[take], train.labels[take]
      model = models.get_model('small_cnn', 10, width=16)
      shape = 'digits 32x32x1'
    else:
      images = rng.random((_SAMPLES.value, 32, 32, 3), np.float32)
      labels = rng.integers(0, 10, _SAMPLES.value).astype(np.int32)
      model = models.get_model(name, 10)
      shape = 'random 32x32x3'
    variables = training.init_variables(model, jax.random.key(0),
                                        images.shape[1:])
    noise_std = 0.2
    noise = (noise_std * rng.standard_normal(images.shape)).astype(np.float32)

    def score():
      return gus.input_gradient_scores(model, variables, images, labels,
                                       noise, noise_std)

    score()  # compile
    times = []
    for _ in range(_REPEATS.value):
      start = time.perf_counter()
      score()
      times.append(time.perf_counter() - start)
    seconds = float(np.median(times))
    rows.append((name, shape, len(labels), seconds,
                 1000 * seconds / len(labels)))

  print(f'\nGUS (per-sample input gradients + dot with ξ); device: {device}; '
        f'median of {_REPEATS.value}\n')
  print('| model | input | samples | seconds | seconds per 1000 samples |')
  print('|---|---|---|---|---|')
  for name, shape, n, seconds, per_1000 in rows:
    print(f'| {name} | {shape} | {n} | {seconds:.2f} | {per_1000:.2f} |')


if __name__ == '__main__':
  app.run(main)
