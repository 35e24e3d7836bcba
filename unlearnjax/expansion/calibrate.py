"""Calibrated expansion of S_f (Goel et al. 2024 §2's open question).

For each score s (of K), the threshold t_s is a high quantile of s on the
clean validation split (the null: no sample there is manipulated), at level
α_s = fpr / K, so that by Bonferroni a clean sample passes *any* threshold
with probability ≤ fpr. The expanded forget set is

  S_f ∪ {i ∈ retain : s(i) > t_s for some s},

the same procedure for every manipulation (no per-manipulation setting).

The quantile is the conformal one (Vovk et al. 2005; Angelopoulos & Bates
2021): t_s is the k-th smallest of the n validation scores with
k = ⌈(n + 1)(1 − α_s)⌉, and a score must exceed it strictly; an
exchangeable clean sample then passes with probability ≤ (n + 1 − k)/(n + 1)
≤ α_s (ties only lower it). Departure from a plain empirical quantile: when
the validation split is too small for α_s (n + 1 < 1/α_s) no order statistic
certifies it; k is clipped to n (t_s = the validation maximum) and the level
actually attained, 1/(n + 1), is what `Expansion.false_positive_rate_bound`
and `expected_false_positives` report, not the fpr asked for.

Validation samples are not training samples, so they are scored against all
of S_f; training rows of S_f are scored leave-one-out (their own score does
not matter: S_f is always kept).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Sequence

import numpy as np

from unlearnjax import expansion

DEFAULT_SCORES = tuple(expansion.SCORES)
DEFAULT_FALSE_POSITIVE_RATE = 0.01


@dataclasses.dataclass(frozen=True)
class Expansion:
  """An expanded forget set and how it was found.

  Attributes:
    rows: sorted training rows, S_f ∪ the retain rows past a threshold.
    added: sorted retain rows past at least one threshold.
    thresholds: score -> t_s (+inf: the score was constant on validation).
    levels: score -> the per-score false-positive level attained (α_s, or
      1/(n + 1) when the validation split is too small for α_s).
    false_positive_rate_bound: Σ levels, the bound on the share of clean
      retain samples added (the fpr asked for when validation is big enough).
    expected_false_positives: false_positive_rate_bound × |retain|.
    per_score_counts: score -> retain rows past its threshold (they overlap).
    seconds: wall time of scoring and calibration (the first computation;
      the task cache serves it again at no cost).
  """
  rows: np.ndarray
  added: np.ndarray
  thresholds: dict
  levels: dict
  false_positive_rate_bound: float
  expected_false_positives: float
  per_score_counts: dict
  seconds: float


def conformal_threshold(null_scores: np.ndarray, level: float
                        ) -> tuple[float, float]:
  """(t, attained level): the k-th smallest null score, k = ⌈(n+1)(1−level)⌉
  clipped to n; P(clean score > t) ≤ attained level = (n + 1 − k)/(n + 1)."""
  null_scores = np.sort(np.where(np.isnan(null_scores), -np.inf,
                                 np.asarray(null_scores, np.float64)))
  n = null_scores.size
  if n == 0:
    raise ValueError('expansion: the validation split is empty; a threshold '
                     'needs clean samples to calibrate on')
  k = min(n, math.ceil(round((n + 1) * (1 - level), 9)))
  k = max(k, 1)
  return float(null_scores[k - 1]), (n + 1 - k) / (n + 1)


def check_false_positive_rate(false_positive_rate: float) -> None:
  if not (isinstance(false_positive_rate, (int, float))
          and not isinstance(false_positive_rate, bool)
          and 0 < false_positive_rate < 1):
    raise ValueError('false_positive_rate must be a number in (0, 1), got '
                     f'{false_positive_rate!r}')


def expand(task, scores: Sequence[str] = DEFAULT_SCORES,
           false_positive_rate: float = DEFAULT_FALSE_POSITIVE_RATE
           ) -> Expansion:
  """S_f expanded by every score past its Bonferroni-calibrated threshold.

  Cached in `task.cached` per (scores, fpr, S_f), so the several methods and
  grid configurations of one task compute it once.
  """
  check_false_positive_rate(false_positive_rate)
  scores = tuple(scores)
  if not scores:
    raise ValueError('expand: give at least one score')
  for name in scores:
    expansion.get_score(name)

  def compute() -> Expansion:
    start = time.perf_counter()
    level = false_positive_rate / len(scores)
    thresholds, levels, counts = {}, {}, {}
    passed = np.zeros(task.retain.size, bool)
    for name in scores:
      null = expansion.score_split(task, name, task.validation)
      threshold, attained = conformal_threshold(null, level)
      if task.retain.size:
        values = expansion.score_rows(task, name, task.retain)
        hit = values > threshold
      else:
        hit = np.zeros(0, bool)
      thresholds[name], levels[name] = threshold, attained
      counts[name] = int(hit.sum())
      passed |= hit
    added = task.retain[passed]
    bound = float(sum(levels.values()))
    return Expansion(
        rows=np.union1d(task.forget, added), added=added,
        thresholds=thresholds, levels=levels, false_positive_rate_bound=bound,
        expected_false_positives=bound * task.retain.size,
        per_score_counts=counts, seconds=time.perf_counter() - start)

  return task.cached(
      f'expansion/expand/{",".join(scores)}/{false_positive_rate!r}/'
      f'{len(task.train)}', task.forget, compute)


def quality(rows, forget, manipulated) -> dict:
  """What a study reports against the true S_m: the expanded set's
  precision (share of it in S_m), the added rows' precision, its recall of
  S_m, and the found fraction S_f alone recalls."""
  rows, forget = np.asarray(rows, np.int64), np.asarray(forget, np.int64)
  manipulated = np.asarray(manipulated, np.int64)
  added = np.setdiff1d(rows, forget)
  true = np.intersect1d(rows, manipulated).size
  size = max(manipulated.size, 1)
  return {
      'expansion_precision': true / max(rows.size, 1),
      'expansion_added_precision': (np.intersect1d(added, manipulated).size
                                    / added.size if added.size else math.nan),
      'expansion_recall': true / size,
      'expansion_found_recall': np.intersect1d(forget, manipulated).size / size,
      'expansion_true_added': int(np.intersect1d(added, manipulated).size),
      'expansion_false_added': int(np.setdiff1d(added, manipulated).size),
  }
