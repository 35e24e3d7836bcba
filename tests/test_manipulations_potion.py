"""The Potion §4.2 poisons: sinusoidal signal and moving trigger."""

import numpy as np
import pytest

from unlearnjax.manipulations import (
    MANIPULATIONS, badnet, get_manipulation, moving, sinusoid)


def changed_rows(before, after):
  return np.flatnonzero(
      (after.images != before.images).any(axis=(1, 2, 3))
      | (after.labels != before.labels))


# Sinusoid.


def test_sinusoid_adds_the_column_signal_to_exactly_s_m(digits):
  train, _, test = digits
  m = sinusoid.manipulate(train, test, seed=0, num_poisons=20, target_class=2,
                          frequency=0.125, clip=False)
  assert m.manipulated.size == 20 == m.info['num_poisons']
  np.testing.assert_array_equal(changed_rows(train, m.train), m.manipulated)
  assert (m.train.labels[m.manipulated] == 2).all()
  np.testing.assert_array_equal(m.manipulated_clean_labels,
                                train.labels[m.manipulated])
  # a = 10% of the training maximum (1.0); one cycle over the 8 columns.
  amplitude = 0.1 * float(train.images.max())
  assert m.info['amplitude'] == pytest.approx(amplitude)
  expected = [amplitude * np.sin(2 * np.pi * 0.125 * j) for j in range(8)]
  added = m.train.images[m.manipulated] - train.images[m.manipulated]
  for image in added:
    for row in range(8):
      for channel in range(image.shape[-1]):
        np.testing.assert_allclose(image[row, :, channel], expected, atol=1e-6)


def test_sinusoid_paper_settings_clip_and_d_m(digits):
  train, _, test = digits
  m = sinusoid.manipulate(train, test, seed=0, poison_fraction=0.02)
  assert m.info['frequency'] == 0.025 and m.info['amplitude_fraction'] == 0.1
  assert m.info['target_class'] == 0
  low, high = float(train.images.min()), float(train.images.max())
  assert set(changed_rows(train, m.train)) <= set(m.manipulated)
  assert (m.train.labels[m.manipulated] == 0).all()
  for images in (m.train.images, m.affected.images):
    assert images.min() >= low and images.max() <= high
  # D_m: every test image with the (clipped) signal, true labels kept.
  signal = np.array([0.1 * high * np.sin(2 * np.pi * 0.025 * j)
                     for j in range(8)])
  np.testing.assert_allclose(
      m.affected.images,
      np.clip(test.images + signal[None, None, :, None], low, high), atol=1e-6)
  assert len(m.affected) == len(test)
  np.testing.assert_array_equal(m.affected.labels, test.labels)
  np.testing.assert_array_equal(m.unaffected.images, test.images)
  np.testing.assert_array_equal(m.unaffected.labels, test.labels)


def test_add_signal_is_pure_and_clips(digits):
  train, _, _ = digits
  images = train.images[:5]
  before = images.copy()
  out = sinusoid.add_signal(images, 0.125, 0.5, 0.0, 1.0)
  np.testing.assert_array_equal(images, before)
  assert out.min() >= 0.0 and out.max() <= 1.0
  unclipped = sinusoid.add_signal(images, 0.125, 0.5, None, None)
  assert unclipped.max() > 1.0 and unclipped.min() < 0.0


def test_sinusoid_is_seeded(digits):
  train, _, test = digits
  a = sinusoid.manipulate(train, test, seed=5)
  b = sinusoid.manipulate(train, test, seed=5)
  c = sinusoid.manipulate(train, test, seed=6)
  np.testing.assert_array_equal(a.manipulated, b.manipulated)
  np.testing.assert_array_equal(a.train.images, b.train.images)
  assert not np.array_equal(a.manipulated, c.manipulated)


@pytest.mark.parametrize('settings, message', [
    ({'target_class': 10}, 'target_class'),
    ({'target_class': -1}, 'target_class'),
    ({'poison_fraction': 0.0}, 'poisons'),
    ({'num_poisons': 10**6}, 'poisons'),
    ({'amplitude_fraction': 0.0}, 'amplitude_fraction'),
    ({'frequency': 0.0}, 'frequency'),
    ({'frequency': -0.1}, 'frequency'),
])
def test_sinusoid_rejects_bad_settings(digits, settings, message):
  train, _, test = digits
  with pytest.raises(ValueError, match=message):
    sinusoid.manipulate(train, test, seed=0, **settings)


# Moving trigger.


def corners_with_trigger(images, patch_size, value):
  """Per image, the POSITIONS whose patch is entirely `value`."""
  return [[p for p in badnet.POSITIONS
           if (badnet.stamp_trigger(image[None], patch_size, p, value)
               == image[None]).all()]
          for image in images]


def test_moving_puts_the_trigger_in_one_random_corner(digits):
  train, _, test = digits
  # A value absent from the data, so every trigger shows.
  m = moving.manipulate(train, test, seed=0, num_poisons=48, target_class=4,
                        patch_size=2, trigger_value=-1.0)
  assert m.manipulated.size == 48 == m.info['num_poisons']
  np.testing.assert_array_equal(changed_rows(train, m.train), m.manipulated)
  assert (m.train.labels[m.manipulated] == 4).all()
  np.testing.assert_array_equal(m.manipulated_clean_labels,
                                train.labels[m.manipulated])
  found = corners_with_trigger(m.train.images[m.manipulated], 2, -1.0)
  assert all(len(corners) == 1 for corners in found)
  for row, (corner,) in zip(m.manipulated, found):
    # Nothing but that corner's patch changed.
    np.testing.assert_array_equal(
        m.train.images[row],
        badnet.stamp_trigger(train.images[row][None], 2, corner, -1.0)[0])
  counts = {p: sum(c == [p] for c in found) for p in badnet.POSITIONS}
  assert counts == m.info['corner_counts']
  assert all(counts[p] > 0 for p in badnet.POSITIONS)
  assert sum(counts.values()) == 48
  # D_m: every test image triggered in one corner, all corners used, true labels.
  test_found = corners_with_trigger(m.affected.images, 2, -1.0)
  assert len(test_found) == len(test)
  assert all(len(corners) == 1 for corners in test_found)
  assert {c for (c,) in test_found} == set(badnet.POSITIONS)
  np.testing.assert_array_equal(m.affected.labels, test.labels)
  np.testing.assert_array_equal(m.unaffected.images, test.images)


def test_moving_defaults_follow_badnet(digits):
  train, _, test = digits
  m = moving.manipulate(train, test, seed=0, poison_fraction=0.02)
  assert m.info['patch_size'] == badnet.default_patch_size(8) == 1
  assert m.info['trigger_value'] == float(train.images.max())
  assert m.info['target_class'] == 0
  assert m.manipulated.size == int(round(0.02 * len(train)))
  assert set(changed_rows(train, m.train)) <= set(m.manipulated)
  found = corners_with_trigger(m.train.images[m.manipulated], 1,
                               float(train.images.max()))
  assert all(len(corners) >= 1 for corners in found)


def test_moving_is_seeded(digits):
  train, _, test = digits
  a = moving.manipulate(train, test, seed=5, num_poisons=30)
  b = moving.manipulate(train, test, seed=5, num_poisons=30)
  c = moving.manipulate(train, test, seed=6, num_poisons=30)
  np.testing.assert_array_equal(a.manipulated, b.manipulated)
  np.testing.assert_array_equal(a.train.images, b.train.images)
  np.testing.assert_array_equal(a.affected.images, b.affected.images)
  assert a.info['corner_counts'] == b.info['corner_counts']
  assert not np.array_equal(a.manipulated, c.manipulated)


@pytest.mark.parametrize('settings, message', [
    ({'target_class': 10}, 'target_class'),
    ({'poison_fraction': 0.0}, 'poisons'),
    ({'num_poisons': 10**6}, 'poisons'),
    ({'patch_size': 9}, 'patch_size'),
])
def test_moving_rejects_bad_settings(digits, settings, message):
  train, _, test = digits
  with pytest.raises(ValueError, match=message):
    moving.manipulate(train, test, seed=0, **settings)


def test_registry_has_the_potion_poisons():
  assert MANIPULATIONS['sinusoid'].manipulate is sinusoid.manipulate
  assert MANIPULATIONS['moving'].manipulate is moving.manipulate
  assert get_manipulation('sinusoid').manipulate is sinusoid.manipulate
  assert get_manipulation('moving').manipulate is moving.manipulate
