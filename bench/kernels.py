r"""ms per sample of a gradient by rows per call: what `unlearnjax.tuning`'s
rule is fitted to (docs/performance.md §1).

  python bench/kernels.py                                  # resnet9_goel 32x32x3
  python bench/kernels.py --model=small_cnn --image_shape=8,8,1

For each rows-per-call value: the eval-mode gradient of the summed XLF
scalar (a host loop of calls, as the per-batch importance runs it) and the
vmapped per-sample gradients (`grads.mean_over_samples` with that chunk),
after a warm-up call of each shape; random weights and inputs; plus the
rows `tuning` picks. A benchmark: it measures, it asserts nothing.
"""

import os
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from unlearnjax import grads as grads_lib, importance, models, training, tuning  # pylint: disable=g-import-not-at-top,wrong-import-position

_MODEL = flags.DEFINE_string('model', 'resnet9_goel', 'registered model')
_SHAPE = flags.DEFINE_list('image_shape', ['32', '32', '3'], 'H,W,C')
_SAMPLES = flags.DEFINE_integer('samples', 256, 'rows per timed pass')
_ROWS = flags.DEFINE_list('rows', ['1', '2', '4', '8', '16', '32', '64',
                                   '256'], 'rows per call to time')


def main(argv):
  del argv
  shape = tuple(int(s) for s in _SHAPE.value)
  model = models.get_model(_MODEL.value, num_classes=10)
  variables = training.init_variables(model, jax.random.key(0), shape)
  n = _SAMPLES.value
  x = np.random.default_rng(0).random((n, *shape), np.float32)
  y = np.random.default_rng(1).integers(0, 10, n).astype(np.int32)

  def summed(params, xb):
    logits = model.apply({'params': params,
                          'batch_stats': variables['batch_stats']}, xb,
                         train=False)
    return jnp.sum(jnp.linalg.norm(logits, axis=1))

  grad = jax.jit(jax.grad(summed))
  per_sample = importance._per_sample_fn(model, 'xlf', 1.0)  # pylint: disable=protected-access
  print(f'{_MODEL.value} {shape}, {jax.devices()[0].platform} x'
        f'{jax.device_count()}, forward '
        f'{tuning.forward_flops(model, variables, shape):.3g} FLOPs/sample; '
        f'tuning picks {tuning.batch_gradient_rows(model, variables, shape, 4096)}'
        f' rows (batch gradient), '
        f'{tuning.per_sample_rows(model, variables, shape)} (per-sample), '
        f'{tuning.search_candidates(model, variables, shape)} PTN candidates')
  print('| rows per call | batch gradient ms/sample | per-sample ms/sample |')
  print('|---|---|---|')
  for rows in (int(r) for r in _ROWS.value):
    jax.block_until_ready(grad(variables['params'], x[:rows]))
    start = time.perf_counter()
    for i in range(0, n - rows + 1, rows):
      out = grad(variables['params'], x[i:i + rows])
    jax.block_until_ready(out)
    batch_ms = 1e3 * (time.perf_counter() - start) / (n - n % rows)
    grads_lib.mean_over_samples(per_sample, variables, x[:rows], y[:rows],
                                rows)
    start = time.perf_counter()
    jax.block_until_ready(grads_lib.mean_over_samples(per_sample, variables,
                                                      x, y, rows))
    sample_ms = 1e3 * (time.perf_counter() - start) / n
    print(f'| {rows} | {batch_ms:.2f} | {sample_ms:.2f} |', flush=True)


if __name__ == '__main__':
  app.run(main)
