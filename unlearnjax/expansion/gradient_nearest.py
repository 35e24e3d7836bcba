"""Gradient similarity to the nearest S_f sample (Goel et al. 2024 §2).

score_i = max_{f ∈ S_f, f ≠ i} cos(∇θ ℓ(x_i, y_i; M_o), ∇θ ℓ(x_f, y_f; M_o)).
Unlike the mean (`gradient_cosine`) it keeps S_f's modes apart: a moving
trigger's four corners, two directions of an interclass swap.
"""

from __future__ import annotations

import numpy as np

from unlearnjax.expansion import _common, _gradients


def score(task, split, train_rows=None) -> np.ndarray:
  """(N,) largest cosine of each sample's gradient to another S_f gradient."""
  train_rows = _common.check_train_rows(split, train_rows)
  stats = _gradients.statistics(task, split)
  return _common.nearest_excluding_self(
      stats['cosines'], _common.forget_positions(task, train_rows))
