"""Corrective-unlearning metrics (Goel eq. 1-2; Potion Table 1; SPEC.md)."""

from __future__ import annotations

import math

import flax.linen as nn
import numpy as np

from unlearnjax import training
from unlearnjax.manipulations.base import Manipulation
from unlearnjax.training import Variables


def corrective_accuracies(model: nn.Module, variables: Variables,
                          manipulation: Manipulation) -> dict[str, float]:
  """Acc_corr (D_m, correct labels), Acc_retain (test outside D_m) and the
  clean-label accuracy on the manipulated training samples S_m."""
  return {
      'acc_corr': training.accuracy(model, variables, manipulation.affected),
      'acc_retain': training.accuracy(model, variables,
                                      manipulation.unaffected),
      'acc_manipulated_train': training.accuracy(
          model, variables, manipulation.manipulated_split),
  }


def poison_healed(acc_corr_unlearned: float, acc_corr_oracle: float) -> float:
  """Potion Table 1: 100·Acc_corr(M_u)/Acc_corr(M*) (SPEC.md, "Poison healed")."""
  if acc_corr_oracle <= 0:
    return math.nan
  return 100.0 * acc_corr_unlearned / acc_corr_oracle


def model_damage(acc_retain_unlearned: float,
                 acc_retain_original: float) -> float:
  """Potion Table 1: Acc_retain(M_u) − Acc_retain(M_o) in points (<0 = damage)."""
  return 100.0 * (acc_retain_unlearned - acc_retain_original)


def changed_share(predictions_original: np.ndarray,
                  predictions_unlearned: np.ndarray) -> float:
  """Share of samples whose predicted class changed."""
  return float(np.mean(np.asarray(predictions_original)
                       != np.asarray(predictions_unlearned)))


def goel_selection_score(validation_accuracy: float,
                         forget_changed_share: float) -> float:
  """Goel §3.2: ½·validation accuracy + ½·share of S_f whose prediction
  changed from the original's."""
  return 0.5 * validation_accuracy + 0.5 * forget_changed_share
