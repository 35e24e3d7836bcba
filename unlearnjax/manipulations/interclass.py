"""Interclass confusion (Goel et al. 2023; Goel et al. 2024 §3.1).

A share of the training samples of classes A and B get the other class's
label. D_m is the test samples of A and B with their true labels; Acc_retain
uses the other classes.
"""

from __future__ import annotations

import numpy as np

from unlearnjax.data.split import Split
from unlearnjax.manipulations.base import Manipulation, host_rng
from unlearnjax.errors import ConfigError


def manipulate(train: Split, test: Split, *, seed: int, class_a: int = 3,
               class_b: int = 8, confused_share: float = 0.5
               ) -> Manipulation:
  """Swaps A<->B labels on `confused_share` of each class's training samples.

  Args:
    class_a, class_b: the confused classes (Goel CIFAR-10: cat and dog; the
      digits default 3 and 8, the pair a digits classifier mixes up most).
    confused_share: share of each of A and B relabelled (Goel's CIFAR-10 main
      setting, 10% of the data, is half of cat and dog: 0.5).
  """
  if class_a == class_b:
    raise ConfigError('class_a and class_b must differ')
  for c in (class_a, class_b):
    if not 0 <= c < train.num_classes:
      raise ConfigError(f'class {c} outside [0, {train.num_classes})')
  if not 0.0 < confused_share <= 1.0:
    raise ConfigError(f'confused_share must be in (0, 1], got {confused_share}')
  rng = host_rng(seed, 'interclass/rows')
  labels = train.labels.copy()
  rows = []
  for source, other in ((class_a, class_b), (class_b, class_a)):
    members = np.flatnonzero(train.labels == source)
    chosen = rng.choice(members, int(round(confused_share * members.size)),
                        replace=False)
    labels[chosen] = other
    rows.append(chosen)
  rows = np.sort(np.concatenate(rows))
  in_pair = np.isin(test.labels, (class_a, class_b))
  return Manipulation(
      train=train.replace(labels=labels), manipulated=rows,
      manipulated_clean_labels=train.labels[rows],
      affected=test.subset(np.flatnonzero(in_pair)),
      unaffected=test.subset(np.flatnonzero(~in_pair)),
      info={'class_a': class_a, 'class_b': class_b,
            'confused_share': confused_share, 'num_confused': int(rows.size)})
