"""The embedded default: scikit-learn's 8x8 handwritten digits (offline).

1797 real images of 10 classes ship inside scikit-learn (`load_digits`), so
every study runs on a fresh machine with no download.
"""

from __future__ import annotations

import numpy as np
from sklearn import datasets as sk_datasets

from unlearnjax.data.split import Split
from unlearnjax.errors import ConfigError


def load_digits(*, test_fraction: float = 0.2, seed: int = 0,
                image_size: int = 8) -> tuple[Split, Split]:
  """Returns (train, test) splits of the digits, pixel values scaled to [0, 1].

  Args:
    test_fraction: share of the 1797 images held out as the test split
      (stratified by class, fixed by `seed`).
    seed: seed of the train/test partition.
    image_size: 8 keeps the native resolution; a multiple of 8 upsamples by
      pixel repetition (useful where input dimension matters, e.g. GUS).
  """
  if image_size % 8 or image_size < 8:
    raise ConfigError(f'image_size must be a multiple of 8, got {image_size}')
  bunch = sk_datasets.load_digits()
  images = (bunch.images.astype(np.float32) / 16.0)[..., None]  # 0..16 -> [0, 1]
  factor = image_size // 8
  if factor > 1:
    images = images.repeat(factor, axis=1).repeat(factor, axis=2)
  labels = bunch.target.astype(np.int32)
  rng = np.random.default_rng(seed)
  test_rows = []
  for c in range(10):
    rows = np.flatnonzero(labels == c)
    test_rows.append(rng.choice(rows, int(round(test_fraction * len(rows))),
                                replace=False))
  test_rows = np.sort(np.concatenate(test_rows))
  train_rows = np.setdiff1d(np.arange(len(labels)), test_rows)
  full = Split(images, labels, 10)
  return full.subset(train_rows), full.subset(test_rows)
