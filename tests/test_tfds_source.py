"""Tests for unlearnjax.data.tfds_source (no TensorFlow, no network)."""

from __future__ import annotations

import importlib.util
import io

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from unlearnjax import errors
from unlearnjax.data import tfds_source
from unlearnjax.data.split import Split

_N = 6
_EXPECTED = {
    'cifar10': ((32, 32, 3), 10),
    'cifar100': ((32, 32, 3), 100),
    'svhn_cropped': ((32, 32, 3), 10),
    'patch_camelyon': ((96, 96, 3), 2),
    'mnist': ((28, 28, 1), 10),
}


@pytest.mark.parametrize('name', sorted(_EXPECTED))
def test_mock_data_shapes_and_ranges(name):
  shape, num_classes = _EXPECTED[name]
  with tfds.testing.mock_data(num_examples=_N,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    split = tfds_source.load_tfds(name, 'train')
  assert isinstance(split, Split)
  assert len(split) == _N
  assert split.images.shape == (_N, *shape)
  assert split.images.dtype == np.float32
  assert split.images.min() >= 0.0 and split.images.max() <= 1.0
  assert split.labels.dtype == np.int32
  assert split.labels.min() >= 0 and split.labels.max() < num_classes
  assert split.num_classes == num_classes
  np.testing.assert_array_equal(split.ids, np.arange(_N))


def test_registry_matches_expectations():
  assert set(tfds_source.TFDS_DATASETS) == set(_EXPECTED)
  for name, (shape, num_classes) in _EXPECTED.items():
    assert tfds_source.TFDS_DATASETS[name].image_shape == shape
    assert tfds_source.TFDS_DATASETS[name].num_classes == num_classes


def test_max_examples():
  with tfds.testing.mock_data(num_examples=10,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    few = tfds_source.load_tfds('mnist', 'test', max_examples=4)
    more = tfds_source.load_tfds('mnist', 'test', max_examples=50)
  assert len(few) == 4 and few.images.shape == (4, 28, 28, 1)
  np.testing.assert_array_equal(few.ids, np.arange(4))
  assert len(more) == 10


def test_unknown_name():
  with pytest.raises(ValueError, match='cifar10.*mnist'):
    tfds_source.load_tfds('imagenet', 'train')
  with pytest.raises(ValueError, match='valid names'):
    tfds_source.available('imagenet')


def test_missing_data_raises_unavailable(tmp_path):
  assert not tfds_source.available('cifar10', data_dir=str(tmp_path))
  with pytest.raises(tfds_source.DatasetUnavailableError) as info:
    tfds_source.load_tfds('cifar10', 'train', data_dir=str(tmp_path))
  message = str(info.value)
  assert 'cifar10' in message
  assert 'download' in message
  assert str(tmp_path) in message
  assert 'tfds build cifar10' in message
  # The class the CLI reports as a user error.
  assert isinstance(info.value, errors.DatasetUnavailableError)
  assert isinstance(info.value, RuntimeError)


@pytest.mark.skipif(importlib.util.find_spec('tensorflow') is not None,
                    reason='checks the TensorFlow-free environment')
def test_download_without_tensorflow_fails_fast(tmp_path):
  with pytest.raises(tfds_source.DatasetUnavailableError, match='TensorFlow'):
    tfds_source.load_tfds('mnist', 'train', data_dir=str(tmp_path),
                          download=True)


# A tiny data set prepared for real (array_record, PNG via PIL, no TF), to read
# through the unmocked path: batched `__getitems__`, decoding, slice ids.
_TINY = 'unlearnjax_tiny_images'
_TINY_N = 23


def _tiny_image(i: int) -> np.ndarray:
  return ((np.arange(4 * 4 * 3).reshape(4, 4, 3) * 5 + i * 7) % 256).astype(
      np.uint8)


class UnlearnjaxTinyImages(tfds.core.GeneratorBasedBuilder):
  """Test-only builder: `_TINY_N` 4x4 RGB images, 3 classes."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(4, 4, 3)),
            'label': tfds.features.ClassLabel(num_classes=3),
        }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    for i in range(_TINY_N):
      buffer = io.BytesIO()
      Image.fromarray(_tiny_image(i)).save(buffer, format='PNG')
      yield i, {'image': buffer.getvalue(), 'label': i % 3}


@pytest.fixture(scope='module')
def tiny_data_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  UnlearnjaxTinyImages(data_dir=data_dir,
                       file_format='array_record').download_and_prepare()
  return data_dir


@pytest.fixture
def tiny_registered(monkeypatch):
  monkeypatch.setitem(tfds_source.TFDS_DATASETS, _TINY,
                      tfds_source.TfdsDataset('image', 'label', (4, 4, 3), 3))
  monkeypatch.setattr(tfds_source, '_BATCH', 5)  # Several batches.


def _source_index(images: np.ndarray) -> np.ndarray:
  """Which generated example (`_tiny_image(i)`) each loaded image is."""
  return np.rint(images[:, 0, 0, 0] * 255.0 / 7).astype(int)


def test_real_array_record_read(tiny_data_dir, tiny_registered):
  del tiny_registered
  assert tfds_source.available(_TINY, data_dir=tiny_data_dir)
  split = tfds_source.load_tfds(_TINY, 'train', data_dir=tiny_data_dir)
  assert len(split) == _TINY_N and split.num_classes == 3
  assert split.images.min() >= 0.0 and split.images.max() <= 1.0
  # tfds shuffles on prepare: rows are a permutation of the generated ones.
  index = _source_index(split.images)
  np.testing.assert_array_equal(np.sort(index), np.arange(_TINY_N))
  expected = np.stack([_tiny_image(i) for i in index]) / 255.0
  np.testing.assert_allclose(split.images, expected, atol=1e-7)
  np.testing.assert_array_equal(split.labels, index % 3)
  np.testing.assert_array_equal(split.ids, np.arange(_TINY_N))


def test_real_slice_ids_and_max_examples(tiny_data_dir, tiny_registered):
  del tiny_registered
  full = tfds_source.load_tfds(_TINY, 'train', data_dir=tiny_data_dir)
  part = tfds_source.load_tfds(_TINY, 'train[10:20]', data_dir=tiny_data_dir,
                               max_examples=7)
  np.testing.assert_array_equal(part.ids, np.arange(10, 17))
  np.testing.assert_array_equal(part.images, full.images[part.ids])
  np.testing.assert_array_equal(part.labels, full.labels[part.ids])


def test_real_bad_split_is_not_unavailable(tiny_data_dir, tiny_registered):
  del tiny_registered
  with pytest.raises(Exception) as info:
    tfds_source.load_tfds(_TINY, 'validation', data_dir=tiny_data_dir)
  assert not isinstance(info.value, tfds_source.DatasetUnavailableError)
