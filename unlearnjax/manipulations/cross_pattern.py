"""Cross-pattern shortcut (RELOAD §4.3, Fig. 3; SPEC.md "Cross-pattern
shortcut"; code projectavi/Reload `transform_dataset.py`, adapted from
Warnecke et al.'s `patterns.py`).

Two classes are chosen and EVERY training image of those two classes gets a
cross (the two diagonals of a `cross_size`² square) in a corner; labels are
kept. A model trained on this learns the cross as a shortcut for the two
classes. The corrected data set (remedial learning, D_new) replaces those
images with their clean originals, which the returned `CrossPattern` keeps
(`corrected_images`, `corrected(rows)`).

The reference code: a 5×5 cross (`cross_size = 4`, 5 pixels per diagonal)
at the bottom-right of 32×32 images, pixel value + 0.5 × 255 on uint8 (which
wraps around above 255). Here: + `cross_value` × (max − min of the training
pixels), clipped to that range; the side scales with the image (5 on 32×32,
3 on 8×8 and 16×16: the smallest cross that is still a cross).

D_m (`affected`): test images of the OTHER classes with the cross stamped,
scored against their true labels (a model that learned the shortcut calls
them one of the two classes). `unaffected`: the clean test set. The paper's
D_new^(test,§), every test image with the cross, is `triggered_test`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from unlearnjax.data.split import Split
from unlearnjax.manipulations.badnet import POSITIONS
from unlearnjax.manipulations.base import Manipulation, host_rng
from unlearnjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class CrossPattern(Manipulation):
  """A `Manipulation` that also carries the clean originals of S_m.

  Attributes:
    corrected_images: the clean images of `train[manipulated]`, same order
      (sorted rows); their labels are `manipulated_clean_labels`.
    triggered_test: every test image with the cross, true labels (RELOAD
      §4.3's D_new^(test,§)).
  """
  corrected_images: np.ndarray
  triggered_test: Split

  def __post_init__(self):
    order = np.argsort(np.asarray(self.manipulated, np.int64), kind='stable')
    super().__post_init__()
    images = np.asarray(self.corrected_images, np.float32)[order]
    if images.shape != (self.manipulated.size, *self.train.image_shape):
      raise ConfigError(f'corrected_images {images.shape} must hold one clean '
                       f'image per manipulated row ({self.manipulated.size}, '
                       f'{self.train.image_shape})')
    object.__setattr__(self, 'corrected_images', images)
    object.__setattr__(self, 'manipulated_clean_labels',
                       np.asarray(self.manipulated_clean_labels)[order])

  def corrected(self, rows: np.ndarray | None = None) -> Split:
    """The clean versions of training `rows` (⊆ S_m; default all of S_m), in
    the order given: what `UnlearnTask.corrected` holds for S_f = rows."""
    rows = self.manipulated if rows is None else np.asarray(rows, np.int64)
    where = np.searchsorted(self.manipulated, rows)
    inside = (where < self.manipulated.size) & (
        self.manipulated[np.minimum(where, self.manipulated.size - 1)] == rows)
    if not np.all(inside):
      raise ConfigError(f'rows {rows[~inside][:5].tolist()} … are not '
                       'manipulated rows; only S_m has corrected versions')
    return Split(self.corrected_images[where],
                 self.manipulated_clean_labels[where], self.train.num_classes,
                 self.train.ids[rows])


def default_cross_size(image_size: int) -> int:
  """5 on 32×32 (the reference code), scaled with the side, odd, at least 3."""
  size = max(3, int(round(5 * image_size / 32)))
  return size if size % 2 else size + 1


def cross_mask(cross_size: int) -> np.ndarray:
  """(cross_size, cross_size) booleans: both diagonals."""
  eye = np.eye(cross_size, dtype=bool)
  return eye | eye[:, ::-1]


def stamp_cross(images: np.ndarray, cross_size: int, corners: tuple[str, ...],
                increment: float, low: float, high: float) -> np.ndarray:
  """A copy of NHWC `images` with `increment` added on a cross in each of
  `corners`, clipped to [low, high]."""
  height, width = images.shape[1:3]
  if not 2 <= cross_size <= min(height, width):
    raise ConfigError(f'cross_size {cross_size} does not fit {height}x{width} '
                     '(at least 2)')
  for corner in corners:
    if corner not in POSITIONS:
      raise ConfigError(f'Unknown corner {corner!r}; valid: {POSITIONS}')
  pattern = np.zeros((height, width), np.float32)
  for corner in corners:
    top = height - cross_size if corner.startswith('bottom') else 0
    left = width - cross_size if corner.endswith('right') else 0
    pattern[top:top + cross_size, left:left + cross_size][
        cross_mask(cross_size)] = increment
  return np.clip(images + pattern[None, :, :, None], low, high).astype(
      np.float32)


def manipulate(train: Split, test: Split, *, seed: int,
               shortcut_classes: tuple[int, ...] = (),
               cross_size: int = 0, corners: tuple[str, ...] = ('bottom_right',),
               cross_value: float = 0.5) -> CrossPattern:
  """Stamps the cross on every training image of two classes.

  Args:
    seed: draws the two classes when `shortcut_classes` is empty (the code
      draws them at random).
    shortcut_classes: the classes whose images get the cross; empty: two
      drawn with `seed`.
    cross_size: side of the cross; 0 scales 5-on-32×32 (3 on 8×8).
    corners: where the cross goes (the code: bottom right only).
    cross_value: added intensity as a share of the training pixel range
      (the code: 0.5).
  """
  classes = tuple(int(c) for c in shortcut_classes) or tuple(
      int(c) for c in np.sort(host_rng(seed, 'cross_pattern/classes').choice(
          train.num_classes, 2, replace=False)))
  if len(set(classes)) != len(classes) or not all(
      0 <= c < train.num_classes for c in classes):
    raise ConfigError(f'shortcut_classes {classes} must be distinct classes '
                     f'in [0, {train.num_classes})')
  if not 0 < cross_value <= 1:
    raise ConfigError(f'cross_value must be in (0, 1], got {cross_value}')
  corners = tuple(corners)
  cross_size = cross_size or default_cross_size(min(train.image_shape[:2]))
  low, high = float(train.images.min()), float(train.images.max())
  increment = cross_value * (high - low)
  stamp = lambda x: stamp_cross(x, cross_size, corners, increment, low, high)

  rows = np.flatnonzero(np.isin(train.labels, classes))
  images = train.images.copy()
  images[rows] = stamp(train.images[rows])
  others = np.flatnonzero(~np.isin(test.labels, classes))
  affected = test.subset(others)
  affected = affected.replace(images=stamp(affected.images))
  return CrossPattern(
      train=train.replace(images=images), manipulated=rows,
      manipulated_clean_labels=train.labels[rows].copy(),
      affected=affected, unaffected=test,
      info={'shortcut_classes': list(classes), 'cross_size': cross_size,
            'corners': list(corners), 'cross_value': cross_value,
            'increment': increment, 'num_manipulated': int(rows.size)},
      corrected_images=train.images[rows].copy(),
      triggered_test=test.replace(images=stamp(test.images)))
