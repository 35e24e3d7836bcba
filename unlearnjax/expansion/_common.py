"""Helpers the expansion scores share: split digests, self rows, cosines.

Every score reads `(task, split, train_rows)`: `train_rows[i]` is the row of
`task.train` that sample i of `split` is (-1 for a sample outside the
training set, e.g. the validation split). A score uses it to leave a
sample out of its own reference: the nearest S_f neighbour of a forget
sample is never itself, and S_f's mean is taken without it.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

from unlearnjax.data.split import Split

if TYPE_CHECKING:  # no runtime import: unlearn.registry imports this package
  from unlearnjax.unlearn.base import UnlearnTask

EPS = 1e-12


def split_digest(split: Split) -> str:
  """A short content hash of `split` (images, labels, ids): the cache key of
  per-split work shared by tasks on the same M_o."""
  digest = hashlib.sha1()
  for array in (split.images, split.labels, split.ids):
    digest.update(np.ascontiguousarray(array).tobytes())
  return digest.hexdigest()[:16]


def rows_digest(rows: np.ndarray) -> str:
  return hashlib.sha1(np.asarray(rows, np.int64).tobytes()).hexdigest()[:16]


def forget_positions(task: 'UnlearnTask', train_rows: np.ndarray) -> np.ndarray:
  """(N,) position in `task.forget` of each sample's own training row, or -1
  (the sample is not in S_f)."""
  train_rows = np.asarray(train_rows, np.int64)
  position = np.searchsorted(task.forget, train_rows)
  position = np.minimum(position, task.forget.size - 1)
  hit = (train_rows >= 0) & (task.forget[position] == train_rows)
  return np.where(hit, position, -1)


def check_train_rows(split: Split, train_rows) -> np.ndarray:
  train_rows = (np.full(len(split), -1, np.int64) if train_rows is None
                else np.asarray(train_rows, np.int64))
  if train_rows.shape != (len(split),):
    raise ValueError(f'train_rows has shape {train_rows.shape}; it must give '
                     f'one row (or -1) per sample of the split ({len(split)})')
  return train_rows


def unit_rows(x: np.ndarray) -> np.ndarray:
  """Rows of `x` scaled to unit norm (zero rows stay zero)."""
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  return x / np.maximum(norms, EPS)


def leave_one_out_mean_cosine(dot_sum: np.ndarray, sq_norm: np.ndarray,
                              sum_sq_norm: float, n_reference: int,
                              positions: np.ndarray) -> np.ndarray:
  """cos(x_i, mean of the reference without x_i where x_i is in it).

  `dot_sum` = x_i · S, `sq_norm` = ‖x_i‖², `sum_sq_norm` = ‖S‖², S the sum of
  the reference vectors. A reference member's own mean is (S − x_i)/(n − 1):
  its dot is x_i·S − ‖x_i‖², its norm² ‖S‖² − 2 x_i·S + ‖x_i‖². A member of
  a one-sample reference has nothing left to compare with: −inf.
  """
  inside = positions >= 0
  dot = np.where(inside, dot_sum - sq_norm, dot_sum)
  other = np.where(inside, sum_sq_norm - 2 * dot_sum + sq_norm, sum_sq_norm)
  cosine = dot / np.maximum(np.sqrt(np.maximum(sq_norm, 0) *
                                    np.maximum(other, 0)), EPS)
  if n_reference == 1:
    cosine = np.where(inside, -np.inf, cosine)
  return cosine


def nearest_excluding_self(cosines: np.ndarray, positions: np.ndarray
                           ) -> np.ndarray:
  """max_j cosines[i, j] over the reference, without sample i's own column
  (`positions[i]`, -1 for none); −inf when nothing is left."""
  cosines = np.array(cosines, np.float64, copy=True)
  inside = np.flatnonzero(positions >= 0)
  cosines[inside, positions[inside]] = -np.inf
  if cosines.shape[1] == 0:
    return np.full(cosines.shape[0], -np.inf)
  return cosines.max(axis=1)
