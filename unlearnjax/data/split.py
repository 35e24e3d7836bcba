"""The one in-memory data type every source, manipulation and method speaks."""

from __future__ import annotations

import dataclasses

import numpy as np

from unlearnjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Split:
  """A labelled image set held on the host.

  Attributes:
    images: float32 array, NHWC.
    labels: int32 array, N. The labels the model trains on (possibly
      manipulated).
    num_classes: number of classes of the task.
    ids: int64 array, N; the row of each sample in its source split, so
      subsets and manipulated copies can be traced back.
  """

  images: np.ndarray
  labels: np.ndarray
  num_classes: int
  ids: np.ndarray | None = None

  def __post_init__(self):
    images = np.asarray(self.images, np.float32)
    labels = np.asarray(self.labels, np.int32)
    if images.ndim != 4:
      raise ConfigError(f'images must be NHWC, got shape {images.shape}')
    if labels.shape != (images.shape[0],):
      raise ConfigError(
          f'labels shape {labels.shape} does not match {images.shape[0]} images')
    ids = (np.arange(len(labels), dtype=np.int64) if self.ids is None
           else np.asarray(self.ids, np.int64))
    object.__setattr__(self, 'images', images)
    object.__setattr__(self, 'labels', labels)
    object.__setattr__(self, 'ids', ids)

  def __len__(self) -> int:
    return int(self.labels.shape[0])

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.images.shape[1:])

  def subset(self, indices) -> 'Split':
    """The samples at `indices` (rows of this split), keeping their ids."""
    indices = np.asarray(indices, np.int64)
    return Split(self.images[indices], self.labels[indices], self.num_classes,
                 self.ids[indices])

  def replace(self, **changes) -> 'Split':
    return dataclasses.replace(self, **changes)
