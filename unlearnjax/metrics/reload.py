"""RELOAD's unlearning metrics (RELOAD §4.2; SPEC.md "NA, ΔFA, ΔFE, NSKL,
FSKL, Cost"), compared with the model retrained on D_new, M(θ~):

* NA: accuracy on D_new (↑).
* ΔFA: |accuracy on D_forget − the retrained model's| (↓).
* ΔFE: |mean cross-entropy on D_forget − the retrained model's| (↓).
* NSKL / FSKL: symmetric KL divergence KL(p‖q) + KL(q‖p) between the two
  models' softmax outputs, mean over the samples of D_new / D_forget (↓).
  The code (`main.py`) averages torch's `kl_div(..., 'batchmean')` over
  loader batches, the same as the sample mean when every batch is full.
* Cost: wall time of the method / wall time of retraining (↓).

D_forget is `task.forget_split`: the forget rows as the model was trained on
them; D_new is the retain rows plus, for remedial learning, `task.corrected`.
Every metric is a pure function of logits and labels; `reload_metrics`
computes the logits.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import numpy as np

from unlearnjax import training
from unlearnjax.data.split import Split


def _log_softmax(logits: np.ndarray) -> np.ndarray:
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _check_pair(logits_a: np.ndarray, logits_b: np.ndarray) -> None:
  if np.shape(logits_a) != np.shape(logits_b) or np.ndim(logits_a) != 2:
    raise ValueError(f'logits must be (N, C) of one shape, got '
                     f'{np.shape(logits_a)} and {np.shape(logits_b)}')


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
  """Share of rows whose argmax is the label (NaN for no rows)."""
  labels = np.asarray(labels)
  if labels.size == 0:
    return math.nan
  return float(np.mean(np.argmax(logits, axis=-1) == labels))


def mean_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
  """Mean over rows of −log softmax(logits)[label] (NaN for no rows)."""
  labels = np.asarray(labels, np.int64)
  if labels.size == 0:
    return math.nan
  log_p = _log_softmax(logits)
  return float(-np.mean(log_p[np.arange(labels.size), labels]))


def symmetric_kl(logits_a: np.ndarray, logits_b: np.ndarray) -> float:
  """Mean over rows of KL(p_a‖p_b) + KL(p_b‖p_a) = Σ_c (p_a − p_b)(log p_a −
  log p_b), p = softmax(logits) (NaN for no rows)."""
  _check_pair(logits_a, logits_b)
  if np.shape(logits_a)[0] == 0:
    return math.nan
  log_a, log_b = _log_softmax(logits_a), _log_softmax(logits_b)
  per_row = np.sum((np.exp(log_a) - np.exp(log_b)) * (log_a - log_b), axis=-1)
  return float(np.mean(per_row))


def new_accuracy(logits_new: np.ndarray, labels_new: np.ndarray) -> float:
  """NA: accuracy on D_new."""
  return accuracy(logits_new, labels_new)


def forget_accuracy_gap(logits_forget: np.ndarray,
                        retrained_logits_forget: np.ndarray,
                        labels_forget: np.ndarray) -> float:
  """ΔFA: |accuracy on D_forget − the retrained model's|."""
  return abs(accuracy(logits_forget, labels_forget)
             - accuracy(retrained_logits_forget, labels_forget))


def forget_error_gap(logits_forget: np.ndarray,
                     retrained_logits_forget: np.ndarray,
                     labels_forget: np.ndarray) -> float:
  """ΔFE: |mean cross-entropy on D_forget − the retrained model's|."""
  return abs(mean_cross_entropy(logits_forget, labels_forget)
             - mean_cross_entropy(retrained_logits_forget, labels_forget))


def cost(seconds: float, retrain_seconds: float) -> float:
  """Cost: the method's wall time over retraining's."""
  if not retrain_seconds > 0:
    raise ValueError(f'retrain_seconds must be > 0, got {retrain_seconds}')
  if seconds < 0:
    raise ValueError(f'seconds must be >= 0, got {seconds}')
  return float(seconds) / float(retrain_seconds)


def evaluation_splits(task_or_splits: Any) -> tuple[Split, Split]:
  """(D_new, D_forget) from an `UnlearnTask` or a (D_new, D_forget) pair."""
  if isinstance(task_or_splits, (tuple, list)):
    new, forget = task_or_splits
    return new, forget
  # pylint: disable-next=g-import-not-at-top (metrics stay light to import)
  from unlearnjax.unlearn import reload as reload_method
  task = task_or_splits
  data = reload_method.new_data(task)
  return data.split.subset(data.new_rows), task.forget_split


def reload_metrics(model: nn.Module, unlearned, retrained, task_or_splits,
                   seconds: float | None = None,
                   retrain_seconds: float | None = None) -> dict[str, float]:
  """NA, ΔFA, ΔFE, NSKL, FSKL and Cost of `unlearned` against `retrained`.

  Args:
    model: the classifier both variables belong to.
    unlearned, retrained: variables ({'params', 'batch_stats'}) or anything
      with a `.variables` (e.g. `Unlearned`).
    task_or_splits: an `UnlearnTask` (D_new = retain ∪ corrected, D_forget =
      the forget rows) or a (D_new, D_forget) pair of splits.
    seconds, retrain_seconds: wall times; Cost is NaN unless both are given.

  Returns also the raw values behind the gaps (`fa`, `fe`, `retrain_fa`,
  `retrain_fe`, `retrain_na`).
  """
  unlearned = getattr(unlearned, 'variables', unlearned)
  retrained = getattr(retrained, 'variables', retrained)
  new, forget = evaluation_splits(task_or_splits)
  logits = lambda v, split: (
      training.predict_logits(model, v, split.images) if len(split)
      else np.zeros((0, split.num_classes), np.float32))
  new_u, new_r = logits(unlearned, new), logits(retrained, new)
  forget_u, forget_r = logits(unlearned, forget), logits(retrained, forget)
  return {
      'na': new_accuracy(new_u, new.labels),
      'delta_fa': forget_accuracy_gap(forget_u, forget_r, forget.labels),
      'delta_fe': forget_error_gap(forget_u, forget_r, forget.labels),
      'nskl': symmetric_kl(new_u, new_r),
      'fskl': symmetric_kl(forget_u, forget_r),
      'cost': (cost(seconds, retrain_seconds)
               if seconds is not None and retrain_seconds is not None
               else math.nan),
      'fa': accuracy(forget_u, forget.labels),
      'fe': mean_cross_entropy(forget_u, forget.labels),
      'retrain_na': new_accuracy(new_r, new.labels),
      'retrain_fa': accuracy(forget_r, forget.labels),
      'retrain_fe': mean_cross_entropy(forget_r, forget.labels),
  }
