"""Input-residual similarity to S_f's mean residual (Goel et al. 2024 §2).

score_i = cos(r_i, mean_{f ∈ S_f, f ≠ i} r_f), r the standardised residual
of the input from the clean validation mean of its label (`_inputs`): what
S_f's inputs share beyond their class (a trigger, a swapped class's look).
"""

from __future__ import annotations

import numpy as np

from unlearnjax.expansion import _common, _inputs


def score(task, split, train_rows=None) -> np.ndarray:
  """(N,) cosine of each residual to S_f's (leave-one-out) mean residual."""
  train_rows = _common.check_train_rows(split, train_rows)
  reference = _inputs.residuals(task, task.forget_split, task.forget)
  total = reference.astype(np.float64).sum(axis=0)
  dot_sum, sq_norm = np.zeros(len(split)), np.zeros(len(split))
  for rows, x in _inputs.residual_chunks(task, split, train_rows):
    x = x.astype(np.float64)
    dot_sum[rows], sq_norm[rows] = x @ total, np.sum(x * x, axis=1)
  return _common.leave_one_out_mean_cosine(
      dot_sum, sq_norm, float(total @ total), task.forget.size,
      _common.forget_positions(task, train_rows))
