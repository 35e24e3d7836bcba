"""Pieces every study config shares: data, model, recipe, smoke settings and
`hparams` (the defaults of every registered method, so that every
`--config.hparams.<method>.<field>=` override works).

Config files are loaded by path; the experiment scripts (and
`tests/conftest.py`) put the repository root on `sys.path`, so a config
imports this file as `from experiments.configs import common`.
"""

from __future__ import annotations

import ml_collections

from unlearnjax.unlearn import METHODS
from unlearnjax.unlearn.registry import default_hparams, hparams_field_types


def method_hparams(**overrides) -> ml_collections.ConfigDict:
  """`hparams.<method>.<field>` for every registered method, at the method's
  defaults; `overrides` (method -> {field: value}) set a study's own values.

  A field equal to the method's default leaves it to the method's grid (when
  the study searches); a field that differs pins it in every configuration.
  Fields whose default is None accept a value of their declared type.
  """
  hparams = ml_collections.ConfigDict()
  for name in METHODS:
    values = default_hparams(name)
    unknown = set(overrides.get(name, {})) - set(values)
    if unknown:
      raise ValueError(f'hparams.{name}: no fields {sorted(unknown)}; valid: '
                       f'{sorted(values)}')
    values.update(overrides.get(name, {}))
    types = hparams_field_types(name)
    fields = ml_collections.ConfigDict()
    for field, value in values.items():
      if value is None:
        fields[field] = ml_collections.FieldReference(None,
                                                      field_type=types[field])
      else:
        fields[field] = value
    hparams[name] = fields
  unknown = set(overrides) - set(METHODS)
  if unknown:
    raise ValueError(f'hparams: no methods {sorted(unknown)}; registered: '
                     f'{sorted(METHODS)}')
  return hparams


def digits_data(config: ml_collections.ConfigDict) -> None:
  """The embedded digits: ships with scikit-learn, no download."""
  config.dataset = 'digits'
  config.data_dir = ''          # tfds data_dir; '' = tfds default
  config.download = False       # let tfds download when the data is missing
  config.image_size = 8         # digits only: 8 native, 16/32 upsampled
  config.max_train = 0          # 0 = all
  config.max_test = 0
  config.validation_fraction = 0.1
