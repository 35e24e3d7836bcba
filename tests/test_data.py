import numpy as np
import pytest

from unlearnjax import data
from unlearnjax.data.split import Split


def test_digits_is_real_and_offline(digits):
  train, validation, test = digits
  assert train.image_shape == (8, 8, 1)
  assert len(train) + len(validation) + len(test) == 1797
  for split in digits:
    assert split.images.dtype == np.float32
    assert 0.0 <= split.images.min() and split.images.max() <= 1.0
    assert set(np.unique(split.labels)) == set(range(10))


def test_splits_are_disjoint(digits):
  train, validation, test = digits
  assert not np.intersect1d(train.ids, validation.ids).size
  # train/validation ids index the source train split; test has its own rows.
  assert len(np.unique(np.concatenate([train.ids, validation.ids]))) == \
      len(train) + len(validation)


def test_validation_carve_is_seeded():
  train, _ = data.load_dataset('digits')
  a = data.carve_validation(train, 0.2, seed=3)[1]
  b = data.carve_validation(train, 0.2, seed=3)[1]
  c = data.carve_validation(train, 0.2, seed=4)[1]
  np.testing.assert_array_equal(a.ids, b.ids)
  assert not np.array_equal(a.ids, c.ids)


def test_upsampled_digits():
  train, _ = data.load_dataset('digits', image_size=16)
  assert train.image_shape == (16, 16, 1)
  np.testing.assert_array_equal(train.images[:, ::2, ::2],
                                train.images[:, 1::2, 1::2])


def test_unknown_dataset_lists_valid_names():
  with pytest.raises(ValueError, match='cifar10'):
    data.load_dataset('imagenet21k')


def test_split_checks_shapes():
  with pytest.raises(ValueError, match='NHWC'):
    Split(np.zeros((3, 8, 8)), np.zeros(3), 10)
  with pytest.raises(ValueError, match='labels'):
    Split(np.zeros((3, 8, 8, 1)), np.zeros(2), 10)
