"""Gaussian data poisoning (Pawelczyk et al. 2024, §4.3 and Alg. 4 lines 3-6;
SPEC.md "Gaussian poison").

P training rows drawn uniformly without replacement get x ← x + ξ with
ξ ~ N(0, ε²·I_d); labels are kept and ξ is stored per poison, so the Gaussian
Unlearning Score (`unlearnjax.metrics.gus`, Alg. 3) can later test whether a
model's input gradient at the clean x_base still correlates with ξ.

Noise scale. The paper uses ε² = 0.32 on CIFAR-10 without stating the input
scale; ε ≈ 0.57 only makes sense on standardised inputs (per-pixel std 1).
This library keeps images in the loader's scale ([0, 1] for the digits), so
ε is absolute in those units and by default

    ε = noise_std_fraction × std(all training pixel values),
    noise_std_fraction = √0.32 ≈ 0.566,

which equals the paper's ε on standardised inputs. Pass `noise_std` to set ε
directly. Poisoned images are NOT clipped to the data range: clipping would
make the stored ξ non-Gaussian and bias the test.

D_m: the Gaussian poison targets no test input, so `affected` and
`unaffected` are both the clean test set with its true labels; the quantity
of interest is GUS, not Acc_corr.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from unlearnjax.data.split import Split
from unlearnjax.manipulations.base import Manipulation, host_rng, poison_rows
from unlearnjax.errors import ConfigError

# The paper's ε² on (standardised) CIFAR-10, as a multiple of the pixel std.
PAPER_NOISE_STD_FRACTION = math.sqrt(0.32)


@dataclasses.dataclass(frozen=True)
class GaussianPoisoning(Manipulation):
  """A Manipulation that also keeps what GUS needs (Alg. 4 line 6).

  Attributes:
    noise: ξ_z, float32 (P, H, W, C), row i belongs to `manipulated[i]`.
    base_images: x_base, the clean images of the poisoned rows, same order;
      `train.images[manipulated] == base_images + noise`.
  """
  noise: np.ndarray
  base_images: np.ndarray

  def __post_init__(self):
    super().__post_init__()
    expected = (self.manipulated.size, *self.train.image_shape)
    for name in ('noise', 'base_images'):
      value = np.asarray(getattr(self, name), np.float32)
      if value.shape != expected:
        raise ConfigError(f'{name} has shape {value.shape}, expected {expected} '
                         '(one row per poisoned sample, sorted like '
                         '`manipulated`).')
      object.__setattr__(self, name, value)

  @property
  def noise_std(self) -> float:
    """ε, the standard deviation of every coordinate of ξ."""
    return float(self.info['noise_std'])


def default_noise_std(train: Split,
                      noise_std_fraction: float = PAPER_NOISE_STD_FRACTION
                      ) -> float:
  """ε = noise_std_fraction × std of all training pixel values."""
  return float(noise_std_fraction * np.std(train.images, dtype=np.float64))


def manipulate(train: Split, test: Split, *, seed: int,
               poison_fraction: float = 0.02, num_poisons: int = 0,
               noise_std: float | None = None,
               noise_std_fraction: float = PAPER_NOISE_STD_FRACTION
               ) -> GaussianPoisoning:
  """Adds Gaussian noise to P training images (Pawelczyk Alg. 4, lines 3-6).

  Args:
    poison_fraction: P / |S_tr| (Pawelczyk: 1.5%, 750 of CIFAR-10); ignored
      when `num_poisons` > 0.
    num_poisons: P directly.
    noise_std: ε in the units of `train.images`; None uses
      `noise_std_fraction` × the std of the training pixels.
    noise_std_fraction: ε relative to the pixel std when `noise_std` is None
      (default √0.32: the paper's ε² = 0.32 on standardised inputs).

  Returns:
    A GaussianPoisoning: `noise` = ξ and `base_images` = x_base per poisoned
    row; info records num_poisons, noise_std (ε), noise_std_fraction (ε over
    the pixel std) and pixel_std.
  """
  rows = poison_rows(train, seed=seed, purpose='gaussian/poison_rows',
                     poison_fraction=poison_fraction, num_poisons=num_poisons,
                     what='The Gaussian poison')
  n = rows.size
  pixel_std = float(np.std(train.images, dtype=np.float64))
  if noise_std is None:
    if not (math.isfinite(noise_std_fraction) and noise_std_fraction > 0):
      raise ConfigError(
          f'noise_std_fraction must be > 0 (the paper: sqrt(0.32) = 0.566), '
          f'got {noise_std_fraction}')
    if not pixel_std > 0:
      raise ConfigError('The training images are constant (pixel std 0); '
                       'pass an absolute noise_std.')
    noise_std = noise_std_fraction * pixel_std
  elif not (math.isfinite(noise_std) and noise_std > 0):
    raise ConfigError(f'noise_std (ε) must be a finite number > 0, got '
                     f'{noise_std}')
  noise_std = float(noise_std)
  base = train.images[rows].copy()
  noise = (noise_std * host_rng(seed, 'gaussian/noise').standard_normal(
      base.shape)).astype(np.float32)
  images = train.images.copy()
  images[rows] = base + noise  # not clipped: ξ must stay Gaussian
  # Store the noise exactly as applied in float32, so x_poison − x_base == ξ.
  noise = images[rows] - base
  return GaussianPoisoning(
      train=train.replace(images=images), manipulated=rows,
      manipulated_clean_labels=train.labels[rows].copy(), affected=test,
      unaffected=test,
      info={'num_poisons': int(n), 'noise_std': noise_std,
            'noise_std_fraction': noise_std / pixel_std if pixel_std > 0
            else math.nan, 'pixel_std': pixel_std},
      noise=noise, base_images=base)
