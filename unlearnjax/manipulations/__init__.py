"""Manipulations behind one registry: name -> an entry that is called as
`manipulate(train, test, seed=, **settings)` and carries its facts: the
label figures use, its default settings (the keyword defaults of its
function) and the name of its poison measures in `unlearnjax.metrics.poisons`
(None: the clean test accuracy only). Adding one is one file plus one line.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable

from unlearnjax.manipulations import (badnet, cross_pattern, false_report,
                                      gaussian, gradient_canceling,
                                      gradient_matching, interclass,
                                      label_flip, moving, sinusoid)
from unlearnjax.manipulations.base import Manipulation
from unlearnjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Registered:
  """A registered manipulation (module doc)."""
  manipulate: Callable[..., Manipulation]
  label: str
  poison_metrics: str | None = None

  def __call__(self, *args, **kwargs) -> Manipulation:
    return self.manipulate(*args, **kwargs)

  @property
  def defaults(self) -> dict:
    """Its settings and their defaults (the function's keyword defaults)."""
    return {name: p.default
            for name, p in inspect.signature(self.manipulate).parameters.items()
            if p.kind == p.KEYWORD_ONLY and p.default is not p.empty
            and name != 'seed'}


MANIPULATIONS: dict[str, Registered] = {
    'badnet': Registered(badnet.manipulate, 'BadNet poisoning'),
    'ic': Registered(interclass.manipulate, 'Interclass confusion'),
    'sinusoid': Registered(sinusoid.manipulate, 'Sinusoidal signal'),
    'moving': Registered(moving.manipulate, 'Moving trigger'),
    'gaussian': Registered(gaussian.manipulate, 'Gaussian poisons',
                           'gaussian_metrics'),                # Pawelczyk §4.3
    'gradient_matching': Registered(gradient_matching.manipulate,
                                    'Targeted poisons (gradient matching)',
                                    'targeted_metrics'),       # Pawelczyk A.1.1
    'gradient_canceling': Registered(gradient_canceling.manipulate,
                                     'Indiscriminate poisons (gradient '
                                     'canceling)'),            # Pawelczyk A.1.3
    'cross_pattern': Registered(cross_pattern.manipulate,
                                'Cross-pattern shortcut'),     # RELOAD §4.3
    'label_flip': Registered(label_flip.manipulate, 'Label flips'),  # PGU §4.5
    'false_report': Registered(false_report.manipulate,
                               'False report (clean S_f)'),    # issue 12
}


def get_manipulation(name: str) -> Registered:
  if name not in MANIPULATIONS:
    raise ConfigError(f'Unknown manipulation {name!r}; valid names: '
                     f'{", ".join(MANIPULATIONS)}.')
  return MANIPULATIONS[name]


def label(name: str) -> str:
  """The registry's label of a manipulation (its name if unregistered)."""
  return MANIPULATIONS[name].label if name in MANIPULATIONS else name


__all__ = ['Manipulation', 'MANIPULATIONS', 'Registered', 'get_manipulation',
           'label']
