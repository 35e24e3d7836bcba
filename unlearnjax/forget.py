"""Forget sets S_f ⊆ S_m: what the model developer has identified."""

from __future__ import annotations

import math

import numpy as np

from unlearnjax.manipulations.base import host_rng
from unlearnjax.errors import ConfigError

ONE_SHOT = 'one-shot'


def check_found_fraction(found_fraction: float) -> None:
  if not (isinstance(found_fraction, (int, float))
          and 0.0 < found_fraction <= 1.0):
    raise ConfigError(
        f'found_fraction must be in (0, 1] (the share of S_m identified), got '
        f'{found_fraction!r}; use {ONE_SHOT!r} for a single sample.')


def sample_forget(manipulated: np.ndarray, found_fraction: float | str,
                  seed: int) -> np.ndarray:
  """A seeded uniform subset of S_m of size ceil(found_fraction·|S_m|).

  One permutation per seed, so the sets are nested across fractions
  (S_f(0.1) ⊆ S_f(0.2) ⊆ …) and every method sees the same S_f at the same
  (fraction, seed). `found_fraction='one-shot'` returns a single sample (the
  first of the permutation). Returns sorted rows of the training set.
  """
  manipulated = np.asarray(manipulated, np.int64)
  if manipulated.size == 0:
    raise ConfigError('S_m is empty: there is nothing to forget.')
  order = host_rng(seed, 'forget/order').permutation(manipulated)
  if found_fraction == ONE_SHOT:
    size = 1
  else:
    check_found_fraction(found_fraction)
    size = max(1, math.ceil(round(found_fraction * manipulated.size, 6)))
  return np.sort(order[:size])


def retain_indices(num_train: int, forget: np.ndarray) -> np.ndarray:
  """S_tr minus S_f (still holds S_m minus S_f)."""
  return np.setdiff1d(np.arange(num_train), forget)
