"""What is left of a poison after unlearning (Pawelczyk et al. 2024, §4-5).

A manipulation's registry entry names its measures here
(`manipulations.MANIPULATIONS[name].poison_metrics`, a function of this
module: `(model, variables, manipulation, settings) -> dict`). Every poison
also gets the clean test accuracy (`poison_metrics`).

- Gaussian (§4.3, Alg. 3-4; Fig. 2 right, Figs. 6-7): GUS, √P·GUS and the
  |I_z| membership test against fresh noise: TPR at FPR 0.01 and 0.001, and
  the empirical ROC on a fixed FPR grid beside the analytic Gaussian curve for
  the measured shift μ = mean I_z.
- Targeted (§4.2, Fig. 3): the share of targets predicted as the adversary's
  label (`gradient_matching.target_success`).
- Indiscriminate (§4.2, Table 2): the test accuracy alone.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn
import numpy as np

from unlearnjax import training
from unlearnjax.manipulations import gradient_matching
from unlearnjax.metrics import gus as gus_lib
from unlearnjax.training import Variables

# FPRs at which every Gaussian row records the empirical TPR (the ROC the
# report draws, log-spaced as Fig. 7's x-axis).
ROC_FPRS = tuple(float(f) for f in np.round(np.logspace(-3, 0, 13), 6))


@dataclasses.dataclass(frozen=True)
class MetricSettings:
  """How poison metrics are measured.

  Attributes:
    fresh_draws: fresh ξ̃ per poison for the "indep" population; FPR comes in
      steps of 1/(draws·P), so TPR@0.001 needs draws·P ≫ 1000.
    seed: seeds the fresh draws (the same for every method of a setting).
  """
  fresh_draws: int = 100
  seed: int = 0


def gaussian_metrics(model: nn.Module, variables: Variables, manipulation,
                     settings: MetricSettings) -> dict:
  """GUS (Alg. 3), √P·GUS and the |I| membership test (Alg. 4, Fig. 6-7)."""
  scores = gus_lib.manipulation_scores(model, variables, manipulation)
  fresh = gus_lib.fresh_noise_scores(
      model, variables, manipulation.base_images,
      manipulation.manipulated_clean_labels, manipulation.noise_std,
      settings.seed, draws=settings.fresh_draws)
  mean_score = gus_lib.gus(scores)
  return {
      'gus': mean_score,
      'gus_z': gus_lib.gus_z(scores),
      'mean_abs_score': float(np.nanmean(np.abs(scores))),
      'tpr_at_fpr_0.01': gus_lib.tpr_at_fpr(scores, fresh, 0.01),
      'tpr_at_fpr_0.001': gus_lib.tpr_at_fpr(scores, fresh, 0.001),
      'roc_fpr': list(ROC_FPRS),
      'roc_tpr': [gus_lib.tpr_at_fpr(scores, fresh, f) for f in ROC_FPRS],
      'roc_tpr_analytic': [float(v) for v in
                           gus_lib.analytic_tradeoff_two_sided(
                               np.asarray(ROC_FPRS), abs(mean_score))],
  }


def targeted_metrics(model: nn.Module, variables: Variables, manipulation,
                     settings: MetricSettings) -> dict:
  """Targeted poisoning success: share of targets predicted as y_adv."""
  del settings
  return {'target_success': gradient_matching.target_success(
      model, variables, manipulation)}


def no_extra_metrics(model, variables, manipulation, settings) -> dict:
  """Indiscriminate poisons: the test accuracy (always measured) says it."""
  del model, variables, manipulation, settings
  return {}


def poison_metrics(name: str, model: nn.Module, variables: Variables,
                   manipulation, settings: MetricSettings = MetricSettings()
                   ) -> dict:
  """Clean test accuracy plus the poison's own measures (named by its
  registry entry; none: the test accuracy only)."""
  from unlearnjax import manipulations  # pylint: disable=g-import-not-at-top
  row = {'test_accuracy': training.accuracy(model, variables,
                                            manipulation.unaffected)}
  entry = manipulations.MANIPULATIONS.get(name)
  measure = (globals()[entry.poison_metrics]
             if entry is not None and entry.poison_metrics else
             no_extra_metrics)
  row.update(measure(model, variables, manipulation, settings))
  return row
