"""Expand-then-correct: any method run on the expanded forget set.

`expand_<name>` computes `calibrate.expand(task, fpr)` (Goel et al. 2024 §2:
use S_f to find the rest of S_m) and runs method `<name>` on the task with
forget = the expanded rows and retain = the rest. Its hparams are the inner
method's fields plus `false_positive_rate` (one flat frozen dataclass, so a
study's `budget_fraction` and `config.hparams.expand_<name>.<field>`
overrides reach it as for the inner method); its grid is the inner grid
(built on the expanded task) at the default rate. Registration is one line
in `unlearn/registry.py` (`expand_variants`). The separator is '_', not
'+': ml_collections parses an override path with `ast`, so
`--config.hparams.expand+retrain.false_positive_rate=0.05` fails to parse
(a ConfigDict key 'expand+retrain' itself is fine).

Departure: nothing is corrected (relabelled) — added rows are only moved
from retain to forget, so the wrapper never reads `task.corrected`.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Sequence

import numpy as np

from unlearnjax.expansion import calibrate

PREFIX = 'expand_'
FIELD = 'false_positive_rate'
# unlearnjax.unlearn.base is imported inside the functions: unlearn.registry
# imports this module while `unlearnjax.unlearn` is still initialising.


def _hparams_class(inner_cls: type) -> type:
  """Frozen dataclass: `inner_cls`'s fields (same types and defaults) and
  `false_positive_rate`; `.inner()` gives the inner method's hparams."""
  hints = typing.get_type_hints(inner_cls)
  fields = []
  for f in dataclasses.fields(inner_cls):
    if f.name == FIELD:
      raise ValueError(f'{inner_cls.__name__} already has a {FIELD} field')
    default = (dataclasses.field(default=f.default)
               if f.default is not dataclasses.MISSING else
               dataclasses.field(default_factory=f.default_factory))
    fields.append((f.name, hints.get(f.name, typing.Any), default))
  fields.append((FIELD, float, dataclasses.field(
      default=calibrate.DEFAULT_FALSE_POSITIVE_RATE)))

  def inner(self):
    return inner_cls(**{f.name: getattr(self, f.name)
                        for f in dataclasses.fields(inner_cls)})

  def post_init(self):
    calibrate.check_false_positive_rate(getattr(self, FIELD))
    inner(self)  # the inner dataclass's own checks

  def validate(self) -> None:
    calibrate.check_false_positive_rate(getattr(self, FIELD))
    values = inner(self)
    if hasattr(values, 'validate'):
      values.validate()

  return dataclasses.make_dataclass(
      f'Expand{inner_cls.__name__}', fields, frozen=True,
      namespace={'inner': inner, '__post_init__': post_init,
                 'validate': validate,
                 '__doc__': f'{inner_cls.__name__} and the expansion\'s '
                            f'{FIELD} (unlearnjax.expansion.method).'})


def expanded_task(task, false_positive_rate: float
                  = calibrate.DEFAULT_FALSE_POSITIVE_RATE):
  """(`task` with forget = expanded rows, retain = the rest, the Expansion)."""
  found = calibrate.expand(task, false_positive_rate=false_positive_rate)
  retain = np.setdiff1d(np.arange(len(task.train)), found.rows)
  return dataclasses.replace(task, forget=found.rows, retain=retain,
                             corrected=None), found


def _finite(value: float):
  return float(value) if np.isfinite(value) else None


def expand_method(inner):
  """The `expand_<inner.name>` Method wrapping registered Method `inner`."""
  from unlearnjax.unlearn import base  # pylint: disable=g-import-not-at-top
  hparams_cls = _hparams_class(inner.hparams)

  def unlearn(task, hparams, key):
    inner_task, found = expanded_task(task, getattr(hparams, FIELD))
    out = base.as_unlearned(inner.unlearn(inner_task, hparams.inner(), key))
    info = dict(out.info)
    info.update({
        'expanded_forget_rows': [int(r) for r in found.rows],
        'n_expanded': int(found.added.size),
        'expansion_seconds': float(found.seconds),
        'expansion_expected_false_positives': float(
            found.expected_false_positives),
        'expansion_false_positive_rate_bound': float(
            found.false_positive_rate_bound),
        'expansion_thresholds': {k: _finite(v)
                                 for k, v in found.thresholds.items()},
        'expansion_per_score_counts': dict(found.per_score_counts),
    })
    return base.Unlearned(out.variables, info)

  def grid(task):
    inner_task, _ = expanded_task(task)
    return [hparams_cls(**dataclasses.asdict(h))
            for h in inner.grid(inner_task)]

  return base.Method(
      f'{PREFIX}{inner.name}', unlearn, hparams_cls, grid,
      label=f'Expand+{inner.display_name}',
      reads_corrected=False)


def expand_variants(methods: dict, names: Sequence[str]) -> dict:
  """{'expand_<name>': expand_method(methods[name])} for each of `names`."""
  return {f'{PREFIX}{name}': expand_method(methods[name]) for name in names}
