"""Exact unlearning of the last k layers, EU-k (Goel et al. 2022; Pawelczyk
A.2.4; SPEC.md, Methods "CF-k / EU-k").

Re-initialises the last k layers with the model's own initialisers (a fresh
`model.init` with the method's key; those modules' params and BatchNorm
statistics are copied in), keeps every other parameter at M_o's, and trains
the last k layers on the retain set from there for `budget_fraction` of the
recipe's steps with the recipe's optimiser (the frozen modules get no
update, not even weight decay). Never reads a forget row.

Layers: the top-level parameter modules in definition order (see
`budgeted.last_modules`; a BatchNorm counts as a layer, a ResNet block as
one). BatchNorm runs in training mode; the running statistics of frozen
modules are put back after every step, so the frozen part is exactly M_o's.

Pawelczyk: K = 3 and learning rates {1e-3, 1e-4, 1e-5}, i.e. {1, 0.1, 0.01}
× GD's; the grid searches those scales of the recipe's rate at the chosen k
(default k = 1; set num_trainable_layers=3 for the paper's).
"""

from __future__ import annotations

import dataclasses

import jax

from unlearnjax.unlearn import budgeted
from unlearnjax.unlearn.base import Method, UnlearnTask

PAWELCZYK_LEARNING_RATE_SCALES = (1.0, 0.1, 0.01)   # 1e-3 … 1e-5 over 1e-3


@dataclasses.dataclass(frozen=True)
class EUkHparams:
  budget_fraction: float = 0.05
  learning_rate_scale: float = 1.0   # × the recipe's learning rate
  num_trainable_layers: int = 1      # k


def train_last_layers(task: UnlearnTask, hparams, key: jax.Array, *,
                      reinitialise: bool, what: str):
  """EU-k (`reinitialise`) or CF-k: train the last k layers on the retain set."""
  init_key, retain_rng = budgeted.fit_keys(key)
  fresh = budgeted.fresh_variables(task.model, init_key, task.train.image_shape)
  trainable = budgeted.last_modules(fresh, hparams.num_trainable_layers)
  variables = task.original
  if reinitialise:
    variables = {
        collection: {name: fresh[collection][name]
                     if name in trainable and name in fresh[collection]
                     else tree for name, tree in variables[collection].items()}
        for collection in ('params', 'batch_stats')}
  recipe = budgeted.budget_recipe(task, hparams.budget_fraction,
                                  hparams.learning_rate_scale)
  return budgeted.run(task, recipe, variables,
                      [budgeted.Part(task.retain, 1.0, retain_rng)],
                      what=what, trainable=trainable)


def unlearn(task: UnlearnTask, hparams: EUkHparams, key: jax.Array):
  return train_last_layers(task, hparams, key, reinitialise=True, what='eu_k')


def pawelczyk_grid(task: UnlearnTask) -> list[EUkHparams]:
  del task
  return [EUkHparams(learning_rate_scale=s)
          for s in PAWELCZYK_LEARNING_RATE_SCALES]


METHOD = Method('eu_k', unlearn, EUkHparams, pawelczyk_grid)
