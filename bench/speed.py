r"""Speed of the hot paths: train steps/s and SSD importance time.

  python bench/speed.py                       # small_cnn on digits + ResNet-9 on 32x32x3
  python bench/speed.py --resnet9_batch=512   # Goel's batch (use an accelerator)

Prints one Markdown table (device named) to paste into the README. A
benchmark, never a test: it measures, it asserts nothing.
"""

import os
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from unlearnjax import data, importance, models, parallel, training  # pylint: disable=g-import-not-at-top,wrong-import-position

_STEPS = flags.DEFINE_integer('steps', 50, 'timed train steps per model')
_DIGITS_BATCH = flags.DEFINE_integer('digits_batch', 128, 'small_cnn batch')
_RESNET9_BATCH = flags.DEFINE_integer('resnet9_batch', 64, 'ResNet-9 batch')
_IMPORTANCE_SAMPLES = flags.DEFINE_integer('importance_samples', 512,
                                           'samples for the SSD importances')
_MODELS = flags.DEFINE_list('models', ['small_cnn', 'resnet9'], 'what to time')


def _time_train(model, images, labels, batch_size, steps):
  recipe = training.Recipe(steps=steps, batch_size=batch_size)
  tx = training.make_optimizer(recipe)
  variables = training.init_variables(model, jax.random.key(0),
                                      images.shape[1:])
  state = parallel.replicate(training.create_train_state(variables, tx))
  step = training.jitted_train_step(model, recipe)
  batch = parallel.shard_batch({'image': images[:batch_size],
                                'label': labels[:batch_size]})
  for _ in range(3):  # compile + warm up
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for i in range(steps):
    state, metrics = step(state, batch)
    if i % 10 == 9:
      jax.block_until_ready(metrics)
  jax.block_until_ready(metrics)
  return steps / (time.perf_counter() - start), jax.device_get(state.variables)


def _time_importance(model, variables, images, labels, estimator):
  kwargs = dict(estimator=estimator, batch_size=min(256, len(labels)))
  importance.fisher_diagonal(model, variables, images[:8], labels[:8],
                             **kwargs)  # compile the chunk shape once
  importance.fisher_diagonal(model, variables, images, labels, **kwargs)
  start = time.perf_counter()
  jax.block_until_ready(importance.fisher_diagonal(model, variables, images,
                                                   labels, **kwargs))
  return time.perf_counter() - start


def main(argv):
  del argv
  device = f'{jax.devices()[0].device_kind} x{jax.device_count()}'
  rows = []
  for name in _MODELS.value:
    if name == 'small_cnn':
      train, _ = data.load_dataset('digits')
      images, labels = train.images, train.labels
      model = models.get_model('small_cnn', 10, width=16)
      batch, shape = _DIGITS_BATCH.value, 'digits 8x8x1'
    else:
      rng = np.random.default_rng(0)
      n = max(_RESNET9_BATCH.value, _IMPORTANCE_SAMPLES.value)
      images = rng.random((n, 32, 32, 3), np.float32)
      labels = rng.integers(0, 10, n).astype(np.int32)
      model = models.get_model(name, 10)
      batch, shape = _RESNET9_BATCH.value, 'random 32x32x3'
    reps = np.resize(np.arange(len(labels)), max(len(labels),
                                                 _IMPORTANCE_SAMPLES.value))
    images, labels = images[reps], labels[reps]
    steps_per_s, variables = _time_train(model, images, labels, batch,
                                         _STEPS.value)
    n = _IMPORTANCE_SAMPLES.value
    exact = _time_importance(model, variables, images[:n], labels[:n], 'exact')
    per_batch = _time_importance(model, variables, images[:n], labels[:n],
                                 'per_batch')
    rows.append(f'| {name} | {shape} | {batch} | {steps_per_s:.1f} | '
                f'{exact:.2f} | {per_batch:.2f} | {n} | {device} |')
    print(rows[-1], flush=True)
  print('\n| model | input | batch | train steps/s | SSD importance exact '
        '(vmap) s | SSD importance per-batch s | samples | device |')
  print('|---|---|---|---|---|---|---|---|')
  print('\n'.join(rows))


if __name__ == '__main__':
  app.run(main)
