"""What every manipulation returns."""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np

from unlearnjax.data.split import Split
from unlearnjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Manipulation:
  """A manipulated training set and the test data the manipulation harms.

  Attributes:
    train: S_tr, the training set as the model sees it.
    manipulated: S_m, sorted rows of `train` the adversary changed.
    manipulated_clean_labels: the correct labels of `train[manipulated]`
      (clean-label accuracy on S_m uses the manipulated inputs with these).
    affected: D_m, test inputs as the manipulation presents them at test time,
      with their correct labels (Goel eq. 1).
    unaffected: test samples outside D_m (Goel eq. 2; for BadNet the clean
      test set).
    info: manipulation settings actually used (e.g. the trigger size).
  """
  train: Split
  manipulated: np.ndarray
  manipulated_clean_labels: np.ndarray
  affected: Split
  unaffected: Split
  info: dict

  def __post_init__(self):
    manipulated = np.asarray(self.manipulated, np.int64)
    if manipulated.size == 0:
      raise ConfigError(
          'The manipulation changed no training sample (S_m is empty); raise '
          'its size (e.g. --config.badnet.poison_fraction).')
    object.__setattr__(self, 'manipulated', np.sort(manipulated))

  @property
  def manipulated_split(self) -> Split:
    """S_m with its clean labels (for clean-label accuracy on S_m)."""
    rows = self.train.subset(self.manipulated)
    return rows.replace(labels=self.manipulated_clean_labels)

  @property
  def clean_indices(self) -> np.ndarray:
    """S_tr minus S_m: what the oracle M* trains on."""
    return np.setdiff1d(np.arange(len(self.train)), self.manipulated)


def host_rng(seed: int, purpose: str) -> np.random.Generator:
  """A numpy generator derived from (seed, purpose): reproducible choices."""
  return np.random.default_rng([seed, zlib.crc32(purpose.encode())])


def check_target_class(train: Split, target_class: int) -> None:
  """Raises unless `target_class` is a class of `train`."""
  if not 0 <= target_class < train.num_classes:
    raise ConfigError(
        f'target_class {target_class} outside [0, {train.num_classes})')


def poison_rows(train: Split, *, seed: int, purpose: str,
                poison_fraction: float, num_poisons: int, what: str
                ) -> np.ndarray:
  """S_m: `num_poisons` (or round(poison_fraction·|S_tr|)) rows of `train`,
  drawn uniformly without replacement from host_rng(seed, purpose), sorted."""
  n = num_poisons or int(round(poison_fraction * len(train)))
  if not 0 < n <= len(train):
    raise ConfigError(
        f'{what} needs 1..{len(train)} poisons, got {n} '
        f'(poison_fraction={poison_fraction}, num_poisons={num_poisons}).')
  return np.sort(host_rng(seed, purpose).choice(len(train), n, replace=False))
