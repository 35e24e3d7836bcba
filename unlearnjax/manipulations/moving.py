"""Moving backdoor trigger (Abad et al. 2022; Potion §4.2).

The BadNet square trigger, but each of the n poisoned training images (drawn
uniformly without replacement, relabelled to `target_class`) gets it in a
corner drawn uniformly from the four ("we place the poison trigger in a
randomly chosen corner of the image"). D_m is every test image with the
trigger in a corner drawn the same way, scored against its true label.
"""

from __future__ import annotations

import numpy as np

from unlearnjax.data.split import Split
from unlearnjax.manipulations.badnet import (
    POSITIONS, default_patch_size, stamp_trigger)
from unlearnjax.manipulations.base import (
    Manipulation, check_target_class, host_rng, poison_rows)
from unlearnjax.errors import ConfigError


def stamp_corners(images: np.ndarray, corners: np.ndarray, patch_size: int,
                  value: float) -> np.ndarray:
  """Returns a copy of NHWC `images`, image i stamped at POSITIONS[corners[i]]."""
  out = images.copy()
  for k, position in enumerate(POSITIONS):
    chosen = np.flatnonzero(corners == k)
    out[chosen] = stamp_trigger(images[chosen], patch_size, position, value)
  return out


def manipulate(train: Split, test: Split, *, seed: int,
               poison_fraction: float = 0.01, num_poisons: int = 0,
               target_class: int = 0, patch_size: int = 0,
               trigger_value: float | None = None) -> Manipulation:
  """Poisons `train` with a trigger in a random corner per image.

  Args:
    poison_fraction: |S_m| / |S_tr|; ignored when `num_poisons` > 0.
    num_poisons: |S_m| directly (Potion: 100/500/1000).
    target_class: the label poisoned samples get.
    patch_size: side of the square trigger; 0 scales 3x3-on-32x32.
    trigger_value: pixel value of the trigger; None uses the maximum of the
      training data (as BadNet).
  """
  check_target_class(train, target_class)
  rows = poison_rows(train, seed=seed, purpose='moving/poison_rows',
                     poison_fraction=poison_fraction, num_poisons=num_poisons,
                     what='The moving trigger')
  n = rows.size
  patch_size = patch_size or default_patch_size(train.image_shape[0])
  height, width = train.image_shape[:2]
  if not 1 <= patch_size <= min(height, width):
    raise ConfigError(f'patch_size {patch_size} does not fit {height}x{width}')
  value = float(train.images.max()) if trigger_value is None else trigger_value
  corners = host_rng(seed, 'moving/corners').integers(len(POSITIONS), size=n)
  test_corners = host_rng(seed, 'moving/test_corners').integers(
      len(POSITIONS), size=len(test))
  images, labels = train.images.copy(), train.labels.copy()
  images[rows] = stamp_corners(images[rows], corners, patch_size, value)
  clean_labels = labels[rows].copy()
  labels[rows] = target_class
  affected = test.replace(
      images=stamp_corners(test.images, test_corners, patch_size, value))
  return Manipulation(
      train=train.replace(images=images, labels=labels), manipulated=rows,
      manipulated_clean_labels=clean_labels, affected=affected,
      unaffected=test,
      info={'patch_size': patch_size, 'trigger_value': value,
            'target_class': target_class, 'num_poisons': int(n),
            'corner_counts': {position: int((corners == k).sum())
                              for k, position in enumerate(POSITIONS)}})
