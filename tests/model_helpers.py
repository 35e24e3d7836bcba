"""Model variables for tests that need shapes, not training."""

import jax
import numpy as np

from unlearnjax import training


def random_variables(model, image_shape, seed=1):
  """Random variables of the model's shapes, drawn with numpy (compiling
  flax's initialisers takes seconds per model on XLA:CPU); BatchNorm
  variances are kept positive."""
  shapes = jax.eval_shape(lambda: training.init_variables(
      model, jax.random.key(0), image_shape))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    value = rng.normal(size=leaf.shape) / np.sqrt(max(1, np.prod(
        leaf.shape[:-1])))
    if 'var' in jax.tree_util.keystr(path):
      value = 1.0 + np.abs(value)
    return value.astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)
