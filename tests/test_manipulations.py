import numpy as np
import pytest

from unlearnjax.manipulations import badnet, get_manipulation, interclass


def test_badnet_poisons_exactly_s_m(digits):
  train, _, test = digits
  m = badnet.manipulate(train, test, seed=0, poison_fraction=0.02,
                        target_class=0)
  n = int(round(0.02 * len(train)))
  assert m.manipulated.size == n == m.info['num_poisons']
  assert m.info['patch_size'] == 1  # 3x3 on 32x32, scaled to 8x8
  changed = np.flatnonzero(
      (m.train.images != train.images).any(axis=(1, 2, 3))
      | (m.train.labels != train.labels))
  assert set(changed) <= set(m.manipulated)
  assert (m.train.labels[m.manipulated] == 0).all()
  assert (m.train.images[m.manipulated, -1:, -1:, :] == train.images.max()).all()
  np.testing.assert_array_equal(m.manipulated_clean_labels,
                                train.labels[m.manipulated])
  # D_m: every test image with the trigger, correct labels; Acc_retain: clean.
  assert len(m.affected) == len(test)
  np.testing.assert_array_equal(m.affected.labels, test.labels)
  assert (m.affected.images[:, -1, -1, :] == train.images.max()).all()
  np.testing.assert_array_equal(m.unaffected.images, test.images)


def test_badnet_settings(digits):
  train, _, test = digits
  m = badnet.manipulate(train, test, seed=1, num_poisons=7, target_class=3,
                        patch_size=2, position='top_left', trigger_value=0.5)
  assert m.manipulated.size == 7
  assert (m.train.labels[m.manipulated] == 3).all()
  assert (m.train.images[m.manipulated, :2, :2, :] == 0.5).all()
  assert badnet.default_patch_size(32) == 3
  with pytest.raises(ValueError, match='position'):
    badnet.manipulate(train, test, seed=0, position='middle')
  with pytest.raises(ValueError, match='poisons'):
    badnet.manipulate(train, test, seed=0, poison_fraction=0.0)


def test_badnet_is_seeded(digits):
  train, _, test = digits
  a = badnet.manipulate(train, test, seed=5)
  b = badnet.manipulate(train, test, seed=5)
  c = badnet.manipulate(train, test, seed=6)
  np.testing.assert_array_equal(a.manipulated, b.manipulated)
  assert not np.array_equal(a.manipulated, c.manipulated)


def test_interclass_swaps_a_and_b(digits):
  train, _, test = digits
  m = interclass.manipulate(train, test, seed=0, class_a=3, class_b=8,
                            confused_share=0.5)
  for source, other in ((3, 8), (8, 3)):
    members = np.flatnonzero(train.labels == source)
    swapped = np.intersect1d(members, m.manipulated)
    assert swapped.size == int(round(0.5 * members.size))
    assert (m.train.labels[swapped] == other).all()
  untouched = np.setdiff1d(np.arange(len(train)), m.manipulated)
  np.testing.assert_array_equal(m.train.labels[untouched],
                                train.labels[untouched])
  np.testing.assert_array_equal(m.train.images, train.images)
  assert set(np.unique(m.affected.labels)) == {3, 8}
  assert not np.isin(m.unaffected.labels, (3, 8)).any()
  assert len(m.affected) + len(m.unaffected) == len(test)
  np.testing.assert_array_equal(m.manipulated_split.labels,
                                train.labels[m.manipulated])


def test_registry_rejects_unknown():
  assert get_manipulation('badnet').manipulate is badnet.manipulate
  assert get_manipulation('badnet').label == 'BadNet poisoning'
  assert get_manipulation('badnet').defaults['poison_fraction'] == 0.01
  with pytest.raises(ValueError, match='badnet'):
    get_manipulation('trojan')
