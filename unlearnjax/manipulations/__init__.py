"""Manipulations behind one registry: name -> manipulate(train, test, seed=, **settings)."""

from __future__ import annotations

from typing import Callable

from unlearnjax.manipulations import (badnet, cross_pattern, gaussian,
                                      gradient_canceling, gradient_matching,
                                      interclass, label_flip, moving,
                                      sinusoid)
from unlearnjax.manipulations.base import Manipulation

MANIPULATIONS: dict[str, Callable[..., Manipulation]] = {
    'badnet': badnet.manipulate,
    'ic': interclass.manipulate,
    'sinusoid': sinusoid.manipulate,
    'moving': moving.manipulate,
    'gaussian': gaussian.manipulate,
    'gradient_matching': gradient_matching.manipulate,    # Pawelczyk A.1.1
    'gradient_canceling': gradient_canceling.manipulate,  # Pawelczyk A.1.3
    'cross_pattern': cross_pattern.manipulate,   # RELOAD §4.3
    'label_flip': label_flip.manipulate,         # PGU §4.5
}


def get_manipulation(name: str) -> Callable[..., Manipulation]:
  if name not in MANIPULATIONS:
    raise ValueError(f'Unknown manipulation {name!r}; valid names: '
                     f'{", ".join(MANIPULATIONS)}.')
  return MANIPULATIONS[name]


__all__ = ['Manipulation', 'MANIPULATIONS', 'get_manipulation']
