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


# SCRUB where a study runs it once, with no search over its α: at the
# corrective benchmark code's own defaults (drimpossible/corrective-
# unlearning-bench, `opts.py --alpha 0.001`, `methods.Scrub`): max-steps
# ascend CE + α·KD with the forget labels, min-steps descend CE + α·KD
# (unlearnjax/unlearn/scrub.py). Stated in the configs rather than left to
# the dataclass defaults, so that it is in every SCRUB row's hparams.
SCRUB_WITHOUT_SEARCH = {'distill_weight': 0.001, 'max_step': 'ce_plus_kl'}


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


def small_cnn_digits(config: ml_collections.ConfigDict) -> None:
  """The digits' small CNN (width 16) and Goel A.1's recipe with its steps
  scaled to the 1,294 training images: 600 steps of 128 ≈ 60 epochs, where
  the model has converged; SGD momentum 0.9, weight decay 5e-4, 1% warm-up,
  linear decay to 0 at 1.25× the steps."""
  config.model = 'small_cnn'
  config.model_kwargs = ml_collections.ConfigDict({'width': 16})
  config.recipe = ml_collections.ConfigDict(dict(
      steps=600, batch_size=128, learning_rate=0.05, momentum=0.9,
      weight_decay=5e-4, warmup_fraction=0.01, schedule_stretch=1.25,
      eval_batch_size=1024))
