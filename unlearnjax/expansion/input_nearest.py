"""Input-residual similarity to the nearest S_f sample (Goel et al. 2024 §2).

score_i = max_{f ∈ S_f, f ≠ i} cos(r_i, r_f), r the standardised residual of
the input from the clean validation mean of its label (`_inputs`). The
nearest neighbour serves S_f made of several kinds (interclass confusion:
class a labelled b and b labelled a).
"""

from __future__ import annotations

import numpy as np

from unlearnjax.expansion import _common, _inputs


def score(task, split, train_rows=None) -> np.ndarray:
  """(N,) largest cosine of each residual to another S_f residual."""
  train_rows = _common.check_train_rows(split, train_rows)
  reference = _common.unit_rows(
      _inputs.residuals(task, task.forget_split, task.forget))
  positions = _common.forget_positions(task, train_rows)
  out = np.zeros(len(split))
  for rows, x in _inputs.residual_chunks(task, split, train_rows):
    out[rows] = _common.nearest_excluding_self(
        _common.unit_rows(x) @ reference.T, positions[rows])
  return out
