"""BadNet backdoor (Gu et al. 2019; Goel et al. §3.1; SPEC.md "BadNet").

A square trigger patch is stamped on n training images drawn uniformly without
replacement, which are relabelled to `target_class`. D_m is every test image
with the trigger stamped, scored against its true label.
"""

from __future__ import annotations

import numpy as np

from unlearnjax.data.split import Split
from unlearnjax.manipulations.base import (
    Manipulation, check_target_class, poison_rows)
from unlearnjax.errors import ConfigError

POSITIONS = ('bottom_right', 'bottom_left', 'top_right', 'top_left')


def default_patch_size(image_size: int) -> int:
  """3x3 on 32x32 (the corrective-benchmark code), scaled to the image side."""
  return max(1, int(round(3 * image_size / 32)))


def stamp_trigger(images: np.ndarray, patch_size: int, position: str,
                  value: float) -> np.ndarray:
  """Returns a copy of NHWC `images` with the patch set to `value`."""
  if position not in POSITIONS:
    raise ConfigError(f'Unknown trigger position {position!r}; valid: {POSITIONS}')
  height, width = images.shape[1:3]
  if not 1 <= patch_size <= min(height, width):
    raise ConfigError(f'patch_size {patch_size} does not fit {height}x{width}')
  rows = slice(height - patch_size, height) if position.startswith('bottom') \
      else slice(0, patch_size)
  cols = slice(width - patch_size, width) if position.endswith('right') \
      else slice(0, patch_size)
  out = images.copy()
  out[:, rows, cols, :] = value
  return out


def manipulate(train: Split, test: Split, *, seed: int,
               poison_fraction: float = 0.01, num_poisons: int = 0,
               target_class: int = 0, patch_size: int = 0,
               position: str = 'bottom_right',
               trigger_value: float | None = None) -> Manipulation:
  """Poisons `train` with a BadNet trigger.

  Args:
    poison_fraction: |S_m| / |S_tr| (Goel: 0.2%, 1%, 2%); ignored when
      `num_poisons` > 0.
    num_poisons: |S_m| directly (Potion: 100/500/1000).
    target_class: the label poisoned samples get (Goel: 0).
    patch_size: side of the square trigger; 0 scales 3x3-on-32x32.
    position: corner of the trigger.
    trigger_value: pixel value of the trigger; None uses the maximum of the
      training data (SPEC.md: "maximum value of the normalised training data").
  """
  check_target_class(train, target_class)
  rows = poison_rows(train, seed=seed, purpose='badnet/poison_rows',
                     poison_fraction=poison_fraction, num_poisons=num_poisons,
                     what='BadNet')
  patch_size = patch_size or default_patch_size(train.image_shape[0])
  value = float(train.images.max()) if trigger_value is None else trigger_value
  images, labels = train.images.copy(), train.labels.copy()
  images[rows] = stamp_trigger(images[rows], patch_size, position, value)
  clean_labels = labels[rows].copy()
  labels[rows] = target_class
  affected = test.replace(
      images=stamp_trigger(test.images, patch_size, position, value))
  return Manipulation(
      train=train.replace(images=images, labels=labels), manipulated=rows,
      manipulated_clean_labels=clean_labels, affected=affected,
      unaffected=test,
      info={'patch_size': patch_size, 'position': position,
            'trigger_value': value, 'target_class': target_class,
            'num_poisons': int(rows.size)})
