"""Catastrophic forgetting of the last k layers, CF-k (Goel et al. 2022;
Pawelczyk A.2.5; SPEC.md, Methods "CF-k / EU-k").

EU-k without the re-initialisation: from M_o, trains only the last k layers
(top-level parameter modules in definition order, `budgeted.last_modules`)
on the retain set for `budget_fraction` of the recipe's steps; every other
parameter and BatchNorm statistic stays exactly M_o's. Never reads a forget
row.

Pawelczyk: K = 3 and learning rates {1e-3, 1e-4, 1e-5}, i.e. {1, 0.1, 0.01}
× GD's; the grid searches those scales of the recipe's rate at the chosen k
(default k = 1; set num_trainable_layers=3 for the paper's).
"""

from __future__ import annotations

import dataclasses

import jax

from unlearnjax.unlearn import eu_k
from unlearnjax.unlearn.base import Method, UnlearnTask


@dataclasses.dataclass(frozen=True)
class CFkHparams:
  budget_fraction: float = 0.05
  learning_rate_scale: float = 1.0   # × the recipe's learning rate
  num_trainable_layers: int = 1      # k


def unlearn(task: UnlearnTask, hparams: CFkHparams, key: jax.Array):
  return eu_k.train_last_layers(task, hparams, key, reinitialise=False,
                                what='cf_k')


def pawelczyk_grid(task: UnlearnTask) -> list[CFkHparams]:
  del task
  return [CFkHparams(learning_rate_scale=s)
          for s in eu_k.PAWELCZYK_LEARNING_RATE_SCALES]


METHOD = Method('cf_k', unlearn, CFkHparams, pawelczyk_grid)
