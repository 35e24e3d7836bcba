"""Sinusoidal-signal backdoor (Barni et al. 2019; Potion §4.2 "Sine waves").

A horizontal sine wave v[j] = a·sin(2π·f·j), j the pixel column, is added over
the whole image (every row and channel) of n training images drawn uniformly
without replacement, which are relabelled to `target_class`. Potion uses
f = 0.025 and a = 10% of the maximum image value. D_m is every test image with
the signal added, scored against its true label.

`frequency` is in cycles per pixel column, not per image: f = 0.025 spans one
cycle over 40 columns, so on small images (0.2 of a cycle on 8x8 digits) the
signal is little more than a ramp. A config for small images should raise it
to get about one cycle or more across the image (e.g. 0.125 on 8x8 gives one
cycle); this module does not rescale it.
"""

from __future__ import annotations

import numpy as np

from unlearnjax.data.split import Split
from unlearnjax.manipulations.base import (
    Manipulation, check_target_class, poison_rows)
from unlearnjax.errors import ConfigError


def column_signal(width: int, frequency: float, amplitude: float) -> np.ndarray:
  """v[j] = amplitude·sin(2π·frequency·j) for the columns j = 0..width-1."""
  return amplitude * np.sin(2 * np.pi * frequency * np.arange(width))


def add_signal(images: np.ndarray, frequency: float, amplitude: float,
               low: float | None = None, high: float | None = None
               ) -> np.ndarray:
  """Returns a copy of NHWC `images` plus the column signal, clipped to
  [low, high] (either bound None: not clipped on that side)."""
  signal = column_signal(images.shape[2], frequency, amplitude)
  out = images + signal[None, None, :, None]
  if low is not None or high is not None:
    out = np.clip(out, low, high)
  return out.astype(images.dtype)


def manipulate(train: Split, test: Split, *, seed: int,
               poison_fraction: float = 0.01, num_poisons: int = 0,
               target_class: int = 0, frequency: float = 0.025,
               amplitude_fraction: float = 0.1, clip: bool = True
               ) -> Manipulation:
  """Poisons `train` with a sinusoidal signal (Potion §4.2).

  Args:
    poison_fraction: |S_m| / |S_tr|; ignored when `num_poisons` > 0.
    num_poisons: |S_m| directly (Potion: 100/500/1000).
    target_class: the label poisoned samples get.
    frequency: cycles per pixel column (Potion: 0.025; see the module note on
      small images).
    amplitude_fraction: amplitude as a share of the maximum of the training
      images (Potion: 10%).
    clip: clip signalled images to [min, max] of the clean training images.
  """
  check_target_class(train, target_class)
  rows = poison_rows(train, seed=seed, purpose='sinusoid/poison_rows',
                     poison_fraction=poison_fraction, num_poisons=num_poisons,
                     what='The sinusoid backdoor')
  if not amplitude_fraction > 0:
    raise ConfigError(
        f'amplitude_fraction must be > 0 (Potion: 0.1), got {amplitude_fraction}')
  if not frequency > 0:
    raise ConfigError(
        f'frequency must be > 0 cycles per pixel column (Potion: 0.025), '
        f'got {frequency}')
  high = float(train.images.max())
  low = float(train.images.min())
  amplitude = amplitude_fraction * high
  if not amplitude > 0:
    raise ConfigError(
        f'The amplitude is amplitude_fraction x the training maximum, '
        f'{amplitude_fraction} x {high} = {amplitude}; it must be > 0.')
  bounds = (low, high) if clip else (None, None)
  images, labels = train.images.copy(), train.labels.copy()
  images[rows] = add_signal(images[rows], frequency, amplitude, *bounds)
  clean_labels = labels[rows].copy()
  labels[rows] = target_class
  affected = test.replace(
      images=add_signal(test.images, frequency, amplitude, *bounds))
  return Manipulation(
      train=train.replace(images=images, labels=labels), manipulated=rows,
      manipulated_clean_labels=clean_labels, affected=affected,
      unaffected=test,
      info={'frequency': frequency, 'amplitude': amplitude,
            'amplitude_fraction': amplitude_fraction,
            'target_class': target_class, 'num_poisons': int(rows.size)})
