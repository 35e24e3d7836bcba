"""Inputs as a representation: standardised residuals from the clean class.

r_i = (x_i − μ_{y_i}) / σ, with x_i the flattened input, μ_c the mean input
of the clean validation split's class c (leave-one-out for a validation
sample, so validation residuals are distributed as a clean training
sample's and the calibration's null stays exchangeable with the retain
set), and σ the per-dimension pooled within-class standard deviation of the
validation residuals, floored at FLOOR_SHARE × its mean.

Why: whatever an adversary adds to an input (a trigger patch, a sinusoid, a
crafted perturbation) or whatever class it swaps a label from, the residual
against the *clean* images of the given label carries it; standardising
puts it on the scale of the clean variation of each pixel, so a change to a
pixel that is nearly constant in clean data (a trigger on the background)
dominates, where in M_o's features a learnt trigger shares the target
class's region with its clean samples. The floor keeps a constant pixel
from dividing by zero: it weighs at most 1/FLOOR_SHARE times an average
pixel. No model is involved, so these scores also serve when M_o is weak.
Departure: not from the five papers; Goel et al. 2024 §2 only pose the
question. It is the class-conditional input-residual view of spectral and
activation-clustering detectors (Tran et al. 2018; Chen et al. 2019) with
S_f giving the direction.
"""

from __future__ import annotations

import numpy as np

from unlearnjax.data.split import Split
from unlearnjax.expansion import _common

FLOOR_SHARE = 0.1
CHUNK_SIZE = 4096  # samples per residual chunk (memory, not results)


def _flat(split: Split) -> np.ndarray:
  return split.images.reshape(len(split), -1).astype(np.float32)


def _centres(sums, counts, x, labels, own) -> np.ndarray:
  """(N, D) clean mean of each sample's class, without the sample itself
  where `own`; the mean of all validation samples for a class with no
  (other) validation sample."""
  class_sums, class_counts = sums[labels], counts[labels]
  total, size = sums.sum(axis=0), counts.sum()
  class_sums = np.where(own[:, None], class_sums - x, class_sums)
  class_counts = np.where(own, class_counts - 1, class_counts)
  all_sums = np.where(own[:, None], total - x, total)
  all_counts = np.where(own, size - 1, size)
  empty = class_counts < 1
  return np.where(empty[:, None], all_sums / np.maximum(all_counts, 1)[:, None],
                  class_sums / np.maximum(class_counts, 1)[:, None])


def _statistics(task) -> dict:
  """Class sums and counts of the validation inputs, and σ (module doc)."""
  validation = task.validation
  if len(validation) < 2:
    raise ValueError('input residuals: the validation split has fewer than 2 '
                     'samples; use a larger validation_fraction')
  x = _flat(validation).astype(np.float64)
  labels = np.asarray(validation.labels)
  num_classes = task.train.num_classes
  sums = np.zeros((num_classes, x.shape[1]))
  np.add.at(sums, labels, x)
  counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
  own = np.ones(len(validation), bool)
  spread = (x - _centres(sums, counts, x, labels, own)).std(axis=0)
  scale = spread + FLOOR_SHARE * spread.mean() + _common.EPS
  return {'sums': sums, 'counts': counts, 'scale': scale}


def residual_chunks(task, split: Split, train_rows: np.ndarray,
                    chunk_size: int | None = None):
  """Yields (rows slice, (n, D) float32 standardised residuals) of `split`
  in chunks of `chunk_size` samples, so a large split's inputs are never
  all held in float64 at once (module doc; `residuals`). `chunk_size`
  None: CHUNK_SIZE."""
  chunk_size = chunk_size or CHUNK_SIZE
  digest = _common.split_digest(task.validation)
  stats = task.cached(f'expansion/inputs/{digest}', None,
                      lambda: _statistics(task))
  labels = np.asarray(split.labels)
  if np.any((labels < 0) | (labels >= stats['counts'].size)):
    raise ValueError('input residuals: a label is outside the classes of '
                     'the training split')
  # Ids are rows of a source split (test and validation ids overlap), so
  # membership is decided by content, for the whole split at once.
  own = (np.asarray(train_rows) < 0) & (
      len(split) == len(task.validation)
      and _common.split_digest(split) == digest)
  for start in range(0, len(split), chunk_size):
    rows = slice(start, min(start + chunk_size, len(split)))
    x = split.images[rows].reshape(rows.stop - start, -1).astype(np.float64)
    centre = _centres(stats['sums'], stats['counts'], x, labels[rows],
                      own[rows])
    yield rows, ((x - centre) / stats['scale']).astype(np.float32)


def residuals(task, split: Split, train_rows: np.ndarray) -> np.ndarray:
  """(N, D) float32 standardised residuals r_i of `split` (module doc).
  When `split` is the validation split itself (same content), each sample
  is taken out of its own class mean; any other split (training rows, a
  held-out test split) is centred on the whole validation class mean. A
  class without (other) validation samples is centred on the mean of all
  validation samples instead."""
  chunks = [r for _, r in residual_chunks(task, split, train_rows)]
  if not chunks:
    return np.zeros((0, int(np.prod(split.images.shape[1:]))), np.float32)
  return np.concatenate(chunks)
