"""Expanding S_f: rank every training sample by how much it looks like S_f.

Goel et al. (2024, §2, "Different gold standards") leave open whether the
identified subset S_f can be used to detect the rest of S_m. Each score here
is `score(task, split, train_rows=None) -> (len(split),)`, higher = more like
S_f, computed from M_o and S_f only (`task.original`, `task.forget`):
`train_rows[i]` is the row of `task.train` that sample i is, or -1 (a
validation sample), so S_f's own samples are scored leave-one-out.
`calibrate.expand` turns the scores into an expanded forget set with a
false-positive rate calibrated on the clean validation split;
`method.expand_variants` makes every method an expand-then-correct method.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from unlearnjax.expansion import feature_cosine, feature_nearest
from unlearnjax.expansion import gradient_cosine, gradient_nearest
from unlearnjax.expansion import input_cosine, input_nearest
from unlearnjax.expansion import label_consistency

Score = Callable[..., np.ndarray]

SCORES: dict[str, Score] = {
    'gradient_cosine': gradient_cosine.score,      # cos to S_f's mean ∇θℓ
    'gradient_nearest': gradient_nearest.score,    # max cos to an S_f ∇θℓ
    'feature_cosine': feature_cosine.score,        # cos to S_f's mean feature
    'feature_nearest': feature_nearest.score,      # max cos to an S_f feature
    'input_cosine': input_cosine.score,            # cos to S_f's mean residual
    'input_nearest': input_nearest.score,          # max cos to an S_f residual
    'label_consistency': label_consistency.score,  # k-NN vote for a seen swap
}


def get_score(name: str) -> Score:
  if name not in SCORES:
    raise ValueError(f'Unknown expansion score {name!r}; valid names: '
                     f'{", ".join(SCORES)}.')
  return SCORES[name]


def score_split(task, name: str, split, train_rows=None) -> np.ndarray:
  """Score `name` of every sample of `split` (default: none of them in the
  training set, e.g. the validation split)."""
  score_fn = get_score(name)
  if len(split) == 0:
    return np.zeros(0)
  scores = np.asarray(score_fn(task, split, train_rows), np.float64)
  if scores.shape != (len(split),):
    raise AssertionError(f'score {name!r} returned shape {scores.shape} for '
                         f'{len(split)} samples')
  return scores


def score_rows(task, name: str, rows) -> np.ndarray:
  """Score `name` of the training rows `rows` (S_f rows leave-one-out)."""
  rows = np.asarray(rows, np.int64)
  return score_split(task, name, task.train.subset(rows), rows)


__all__ = ['SCORES', 'get_score', 'score_split', 'score_rows']
