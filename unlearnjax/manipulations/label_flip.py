"""Pairwise label flips (PGU §4.5, after Warnecke et al. 2023).

Classes are paired (cat↔dog, …); a budget of training samples of each paired
class get the label of its partner. The authors' code
(`datasets/poison_cifar.py`) pairs all ten CIFAR-10 classes by a seeded
shuffle and flips `num_poison` samples of every class (Table 4: 5K … 25K
flips of 50K, i.e. 10 … 50% of every class); `class_pairs='random'` does the
same here. The default pairs two visually confusable digit pairs, so D_m is a
part of the test set and Acc_retain has the rest.

D_m: the test samples of the paired classes, with their true labels;
unaffected: the other test samples (empty when every class is paired).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from unlearnjax.data.split import Split
from unlearnjax.errors import ConfigError
from unlearnjax.manipulations.base import Manipulation, host_rng

# Digits 1↔7 and 4↔9: the pairs handwritten digits are most often confused
# in (not 3↔8, which interclass confusion uses).
DIGITS_PAIRS = ((1, 7), (4, 9))
# CIFAR-10: cat↔dog, automobile↔truck, airplane↔ship, deer↔horse, bird↔frog.
CIFAR10_PAIRS = ((3, 5), (1, 9), (0, 8), (4, 7), (2, 6))


def random_pairs(num_classes: int, seed: int) -> tuple[tuple[int, int], ...]:
  """Every class paired by a seeded shuffle (the authors' code; with an odd
  number of classes the last one stays unpaired)."""
  order = host_rng(seed, 'label_flip/pairs').permutation(num_classes)
  return tuple((int(order[2 * i]), int(order[2 * i + 1]))
               for i in range(num_classes // 2))


def check_pairs(pairs, num_classes: int) -> tuple[tuple[int, int], ...]:
  pairs = tuple(tuple(int(c) for c in pair) for pair in pairs)
  if not pairs:
    raise ConfigError('class_pairs is empty: give at least one (a, b) pair.')
  seen = []
  for pair in pairs:
    if len(pair) != 2:
      raise ConfigError(f'class pair {pair} must hold exactly two classes')
    a, b = pair
    if a == b:
      raise ConfigError(f'class pair {pair} pairs a class with itself')
    for c in pair:
      if not 0 <= c < num_classes:
        raise ConfigError(f'class {c} of pair {pair} outside [0, {num_classes})')
      if c in seen:
        raise ConfigError(f'class {c} is in more than one pair of {pairs}; '
                         'each class may be flipped towards one partner only.')
      seen.append(c)
  return pairs


def _flip_counts(sizes: np.ndarray, num_flips: int, flip_fraction: float
                 ) -> np.ndarray:
  """Flips per paired class: num_flips split as evenly as possible (the
  first classes take the remainder), or round(flip_fraction · class size)."""
  if num_flips:
    counts = np.full(sizes.size, num_flips // sizes.size)
    counts[:num_flips % sizes.size] += 1
    return counts
  return np.rint(flip_fraction * sizes).astype(np.int64)


def manipulate(train: Split, test: Split, *, seed: int, num_flips: int = 0,
               flip_fraction: float = 0.2,
               class_pairs: Sequence[Sequence[int]] | str = DIGITS_PAIRS
               ) -> Manipulation:
  """Flips a budget of labels between each pair of classes (PGU §4.5).

  Args:
    seed: picks the flipped samples (and the pairs, for 'random').
    num_flips: total flips over all paired classes, split evenly among them
      (0: use flip_fraction).
    flip_fraction: share of each paired class's training samples flipped
      (the paper's 5K … 25K on CIFAR-10 are 0.1 … 0.5).
    class_pairs: disjoint (a, b) pairs, or 'random' for the authors' seeded
      pairing of every class.
  """
  if isinstance(class_pairs, str):
    if class_pairs != 'random':
      raise ConfigError(f"class_pairs must be a sequence of (a, b) pairs or "
                       f"'random', got {class_pairs!r}")
    class_pairs = random_pairs(train.num_classes, seed)
  pairs = check_pairs(class_pairs, train.num_classes)
  if num_flips < 0:
    raise ConfigError(f'num_flips must be >= 0, got {num_flips}')
  if not num_flips and not 0.0 < flip_fraction <= 1.0:
    raise ConfigError(f'flip_fraction must be in (0, 1], got {flip_fraction}')
  sources = [c for pair in pairs for c in pair]
  partner = {a: b for a, b in pairs} | {b: a for a, b in pairs}
  members = [np.flatnonzero(train.labels == c) for c in sources]
  sizes = np.array([m.size for m in members])
  counts = _flip_counts(sizes, num_flips, flip_fraction)
  short = [(c, int(k), int(s)) for c, k, s in zip(sources, counts, sizes)
           if k > s]
  if short:
    raise ConfigError(
        f'label_flip: (class, flips, samples) {short}: a class has fewer '
        f'training samples than its share of the budget; lower num_flips '
        f'(at most {int(sizes.min()) * sizes.size} spread evenly).')
  if counts.sum() == 0:
    raise ConfigError('label_flip flips no sample: raise num_flips or '
                     'flip_fraction (--config.label_flip.flip_fraction).')
  rng = host_rng(seed, 'label_flip/rows')
  labels = train.labels.copy()
  rows = []
  for source, pool, count in zip(sources, members, counts):
    chosen = rng.choice(pool, int(count), replace=False)
    labels[chosen] = partner[source]
    rows.append(chosen)
  rows = np.sort(np.concatenate(rows))
  in_pairs = np.isin(test.labels, sources)
  return Manipulation(
      train=train.replace(labels=labels), manipulated=rows,
      manipulated_clean_labels=train.labels[rows],
      affected=test.subset(np.flatnonzero(in_pairs)),
      unaffected=test.subset(np.flatnonzero(~in_pairs)),
      info={'class_pairs': [list(p) for p in pairs],
            'num_flips': int(rows.size),
            'flips_per_class': {int(c): int(k)
                                for c, k in zip(sources, counts)},
            'flip_fraction': None if num_flips else flip_fraction})
