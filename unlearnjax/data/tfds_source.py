"""Image classification data sets read from TFDS array_record files.

Reads with `tfds.data_source` (random access over array_record), which works
without TensorFlow. Preparing (downloading + encoding) a data set with tfds
4.9 does need TensorFlow, so in a TensorFlow-free environment the data must be
prepared elsewhere (`tfds build ... --file_format=array_record`) and copied
into `data_dir`; `DatasetUnavailableError` says so.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Any, Sequence

import numpy as np
import tensorflow_datasets as tfds

from unlearnjax.data.split import Split
# The one class the CLI catches as a user error; re-exported here.
from unlearnjax.errors import ConfigError, DatasetUnavailableError

_FILE_FORMAT = 'array_record'
# Examples decoded per `__getitems__` call.
_BATCH = 1024


@dataclasses.dataclass(frozen=True)
class TfdsDataset:
  """How to read one tfds image classification data set.

  Attributes:
    image_key: feature key of the uint8 image.
    label_key: feature key of the `ClassLabel`.
    image_shape: HWC of every image (checked on load).
    num_classes: classes of `label_key` (checked against the tfds info).
  """

  image_key: str
  label_key: str
  image_shape: tuple[int, int, int]
  num_classes: int


TFDS_DATASETS: dict[str, TfdsDataset] = {
    'cifar10': TfdsDataset('image', 'label', (32, 32, 3), 10),
    'cifar100': TfdsDataset('image', 'label', (32, 32, 3), 100),
    'svhn_cropped': TfdsDataset('image', 'label', (32, 32, 3), 10),
    'patch_camelyon': TfdsDataset('image', 'label', (96, 96, 3), 2),
    'mnist': TfdsDataset('image', 'label', (28, 28, 1), 10),
}


def _spec(name: str) -> TfdsDataset:
  if name not in TFDS_DATASETS:
    raise ConfigError(f'Unknown tfds dataset {name!r}; valid names: '
                     f'{", ".join(sorted(TFDS_DATASETS))}.')
  return TFDS_DATASETS[name]


def _builder(name: str, data_dir: str | None):
  return tfds.builder(name, data_dir=data_dir, file_format=_FILE_FORMAT)


def _prepared_formats(name: str, data_dir: str | None) -> set[str] | None:
  """File formats `name` is prepared in under `data_dir`; None if absent."""
  try:
    builder = _builder(name, data_dir)
    if not builder.is_prepared():
      return None
    return {f.value for f in builder.info.available_file_formats()}
  except Exception:  # pylint: disable=broad-except
    return None


def available(name: str, data_dir: str | None = None) -> bool:
  """Whether `name` is prepared as array_record under `data_dir` (no download).

  `data_dir=None` means the tfds default (`$TFDS_DATA_DIR` or
  `~/tensorflow_datasets`).
  """
  _spec(name)
  formats = _prepared_formats(name, data_dir)
  return formats is not None and _FILE_FORMAT in formats


def _has_tensorflow() -> bool:
  return importlib.util.find_spec('tensorflow') is not None


def _unavailable_message(name: str, data_dir: str | None,
                         reason: str) -> str:
  """What is missing, where it was looked for, and how to get it."""
  try:
    builder = _builder(name, data_dir)
    root, variant = str(builder.data_dir_root), str(builder.data_dir)
  except Exception:  # pylint: disable=broad-except
    root = data_dir or tfds.core.constants.DATA_DIR
    variant = os.path.join(root, name)
  shown_dir = data_dir or f'{root} (the tfds default)'
  formats = _prepared_formats(name, data_dir)
  found = ('' if formats is None else
           f'\nIt is prepared there only as {sorted(formats)}, but random '
           f'access needs {_FILE_FORMAT}.')
  return (
      f'TFDS dataset {name!r} is not available as {_FILE_FORMAT} in data_dir '
      f'{shown_dir} (looked for {variant}): {reason}{found}\n'
      'To get it, either:\n'
      '  * rerun with --config.download=True (download=True) on a machine '
      'with internet access; note that tfds needs TensorFlow installed to '
      'prepare (encode) the images, or\n'
      f'  * prepare it elsewhere, in an environment with internet and '
      f'TensorFlow (pip install tensorflow tensorflow-datasets):\n'
      f'      tfds build {name} --file_format={_FILE_FORMAT} '
      f'--data_dir=PREPARED_DIR\n'
      f'    then copy PREPARED_DIR/{name} to {os.path.join(root, name)} '
      '(or pass --config.data_dir=PREPARED_DIR).')


def _row_ids(source: Any, split: str, n: int) -> np.ndarray:
  """Row of each example in its own tfds split (offset of slices kept).

  For `'train[1000:2000]'` that is 1000..1999; for a union of splits each part
  counts rows in its own split. Falls back to 0..n-1 when the split sizes are
  unknown (e.g. under `tfds.testing.mock_data`).
  """
  try:
    instructions = tfds.core.ReadInstruction.from_spec(split).to_absolute(
        source.dataset_info.splits)
    ids = np.concatenate(
        [np.arange(i.from_, i.to, dtype=np.int64) for i in instructions])
    if ids.shape == (n,):
      return ids
  except Exception:  # pylint: disable=broad-except
    pass
  return np.arange(n, dtype=np.int64)


def _read(source: Any, keys: Sequence[int], batched: bool) -> list[Any]:
  if batched:
    return source.__getitems__(list(keys))
  return [source[k] for k in keys]


def load_tfds(name: str, split: str, *, data_dir: str | None = None,
              download: bool = False,
              max_examples: int | None = None) -> Split:
  """Loads `split` of tfds data set `name` into a `Split`.

  Args:
    name: a key of `TFDS_DATASETS`.
    split: a tfds split spec ('train', 'test', 'train[:90%]', ...).
    data_dir: tfds data directory; None means the tfds default.
    download: let tfds download and prepare the data when it is missing.
    max_examples: keep only the first `max_examples` examples of the split.

  Returns:
    float32 NHWC images in [0, 1], int32 labels, `num_classes` from the tfds
    info, and `ids` the row of each example in its tfds split.

  Raises:
    ValueError: unknown `name`.
    DatasetUnavailableError: the data is not prepared as array_record under
      `data_dir` and could not be downloaded (the message says what to do).
  """
  spec = _spec(name)
  if download and not _has_tensorflow() and not available(name, data_dir):
    # tfds 4.9 encodes images with TensorFlow while preparing: fail before
    # downloading hundreds of MB rather than after.
    raise DatasetUnavailableError(_unavailable_message(
        name, data_dir, 'download=True, but preparing needs TensorFlow, '
        'which is not installed here.'))
  try:
    source = tfds.data_source(
        name, split=split, data_dir=data_dir, download=download,
        builder_kwargs={'file_format': _FILE_FORMAT})
  except Exception as e:  # pylint: disable=broad-except
    if available(name, data_dir):
      raise  # A real error (bad split spec, ...), not missing data.
    reason = ('download=False and it is not prepared locally.' if not download
              else f'the download failed ({type(e).__name__}: {e}).')
    raise DatasetUnavailableError(
        _unavailable_message(name, data_dir, reason)) from e

  info = source.dataset_info
  num_classes = int(info.features[spec.label_key].num_classes)
  if num_classes != spec.num_classes:
    raise ConfigError(f'{name}: tfds reports {num_classes} classes, expected '
                     f'{spec.num_classes}.')
  n = len(source)
  if max_examples is not None:
    n = min(n, max(0, int(max_examples)))

  images = np.empty((n, *spec.image_shape), np.float32)
  labels = np.empty((n,), np.int32)
  batched = hasattr(source, '__getitems__')
  for start in range(0, n, _BATCH):
    keys = range(start, min(n, start + _BATCH))
    try:
      examples = _read(source, keys, batched)
    except TypeError:
      if not batched or start:
        raise
      # tfds 4.9.10's `mock_data` installs an unbound `__getitems__`; read
      # one by one (a real error re-raises there).
      batched = False
      examples = _read(source, keys, batched)
    batch = np.stack([np.asarray(ex[spec.image_key]) for ex in examples])
    if batch.ndim == 3:  # HW -> HW1
      batch = batch[..., None]
    if batch.shape[1:] != spec.image_shape:
      raise ConfigError(f'{name}: images of shape {batch.shape[1:]}, expected '
                       f'{spec.image_shape}.')
    images[keys.start:keys.stop] = batch.astype(np.float32) / np.float32(255)
    labels[keys.start:keys.stop] = [int(ex[spec.label_key]) for ex in examples]

  ids = _row_ids(source, split, len(source))[:n]
  return Split(images, labels, num_classes, ids)


__all__ = ['TFDS_DATASETS', 'TfdsDataset', 'DatasetUnavailableError',
           'available', 'load_tfds']
