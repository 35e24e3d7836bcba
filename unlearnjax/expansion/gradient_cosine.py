"""Gradient similarity to S_f's mean gradient (Goel et al. 2024 §2).

score_i = cos(∇θ ℓ(x_i, y_i; M_o), ḡ_f), ḡ_f the mean per-sample gradient
over S_f (without x_i when x_i ∈ S_f). Samples the manipulation made alike
(one trigger, one label swap) pull M_o the same way as the identified ones.
"""

from __future__ import annotations

import numpy as np

from unlearnjax.expansion import _common, _gradients


def score(task, split, train_rows=None) -> np.ndarray:
  """(N,) cosine of each sample's gradient to S_f's (leave-one-out) mean."""
  train_rows = _common.check_train_rows(split, train_rows)
  stats = _gradients.statistics(task, split)
  return _common.leave_one_out_mean_cosine(
      stats['dot_sum'], stats['sq_norm'], stats['sum_sq_norm'],
      task.forget.size, _common.forget_positions(task, train_rows))
