"""Data sources behind one registry, and the validation carve-out."""

from __future__ import annotations

import numpy as np

from unlearnjax.data.split import Split
from unlearnjax.errors import ConfigError

# Name -> where it comes from. The embedded default needs no download.
DATASETS = ('digits', 'cifar10', 'cifar100', 'svhn_cropped', 'patch_camelyon',
            'mnist')


def check_dataset(name: str) -> None:
  """Raises ValueError naming the valid data sets unless `name` is one."""
  if name not in DATASETS:
    raise ConfigError(
        f'Unknown dataset {name!r}; valid names: {", ".join(DATASETS)}.')


def load_dataset(name: str, *, data_dir: str | None = None,
                 download: bool = False, max_train: int | None = None,
                 max_test: int | None = None, seed: int = 0,
                 image_size: int = 8) -> tuple[Split, Split]:
  """Returns (train, test) for `name`.

  Raises:
    ValueError: for an unknown name (the message lists the valid ones).
    DatasetUnavailableError: a tfds data set is not prepared locally and
      `download` is off (the message says how to get it).
  """
  check_dataset(name)
  if name == 'digits':
    from unlearnjax.data import digits  # pylint: disable=g-import-not-at-top
    train, test = digits.load_digits(seed=seed, image_size=image_size)
  else:
    from unlearnjax.data import tfds_source  # pylint: disable=g-import-not-at-top
    train = tfds_source.load_tfds(name, 'train', data_dir=data_dir,
                                  download=download, max_examples=max_train)
    test_split = 'validation' if name == 'patch_camelyon' else 'test'
    test = tfds_source.load_tfds(name, test_split, data_dir=data_dir,
                                 download=download, max_examples=max_test)
  if max_train is not None and len(train) > max_train:
    train = train.subset(np.arange(max_train))
  if max_test is not None and len(test) > max_test:
    test = test.subset(np.arange(max_test))
  return train, test


def carve_validation(train: Split, validation_fraction: float,
                     seed: int) -> tuple[Split, Split]:
  """Splits a clean validation set off `train` (before any manipulation).

  Every selection step (Goel's score, early stopping, PTN) reads this split,
  never the test set (SPEC.md, "Select models ... on a validation split").
  """
  if not 0.0 < validation_fraction < 1.0:
    raise ConfigError(
        f'validation_fraction must be in (0, 1), got {validation_fraction}')
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(train))
  n_val = max(1, int(round(validation_fraction * len(train))))
  return train.subset(np.sort(order[n_val:])), train.subset(np.sort(order[:n_val]))


def load_from_config(config, seed: int) -> tuple[Split, Split, Split]:
  """(train, validation, test) as a study config names them (`dataset`,
  `data_dir`, `download`, `max_train`, `max_test`, `image_size`,
  `validation_fraction`); the validation split is carved off with `seed`,
  before any manipulation."""
  train, test = load_dataset(
      config.dataset, data_dir=config.get('data_dir') or None,
      download=config.get('download', False),
      max_train=config.get('max_train') or None,
      max_test=config.get('max_test') or None, seed=0,
      image_size=config.get('image_size', 8))
  train, validation = carve_validation(train, config.validation_fraction, seed)
  return train, validation, test


__all__ = ['Split', 'DATASETS', 'check_dataset', 'load_dataset',
           'carve_validation', 'load_from_config']
