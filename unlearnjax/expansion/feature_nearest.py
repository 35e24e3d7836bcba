"""Representation similarity to the nearest S_f sample (Goel et al. 2024 §2).

score_i = max_{f ∈ S_f, f ≠ i} cos(h_i − h̄, h_f − h̄) on M_o's centred
penultimate features (`_features`).
"""

from __future__ import annotations

import numpy as np

from unlearnjax.expansion import _common, _features


def score(task, split, train_rows=None) -> np.ndarray:
  """(N,) largest cosine of each centred feature to another S_f feature."""
  train_rows = _common.check_train_rows(split, train_rows)
  x = _common.unit_rows(_features.centred(task, split))
  reference = _common.unit_rows(_features.centred(task, task.forget_split))
  return _common.nearest_excluding_self(
      x @ reference.T, _common.forget_positions(task, train_rows))
