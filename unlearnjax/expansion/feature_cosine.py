"""Representation similarity to S_f's mean feature (Goel et al. 2024 §2).

score_i = cos(h_i − h̄, mean_{f ∈ S_f, f ≠ i} (h_f − h̄)), h the penultimate
features of M_o (`_features`), h̄ their training-set mean. A learnt trigger
maps its samples to one region of feature space (the spectral-signature
observation of Tran et al. 2018).
"""

from __future__ import annotations

import numpy as np

from unlearnjax.expansion import _common, _features


def score(task, split, train_rows=None) -> np.ndarray:
  """(N,) cosine of each sample's centred feature to S_f's (leave-one-out)
  mean centred feature."""
  train_rows = _common.check_train_rows(split, train_rows)
  x = _features.centred(task, split).astype(np.float64)
  reference = _features.centred(task, task.forget_split).astype(np.float64)
  total = reference.sum(axis=0)
  return _common.leave_one_out_mean_cosine(
      x @ total, np.sum(x * x, axis=1), float(total @ total),
      task.forget.size, _common.forget_positions(task, train_rows))
