"""Gradient descent on the retain set, GD (Neel et al. 2021; Pawelczyk A.2.1;
SPEC.md, Methods "GD / NGD").

θ_{t+1} = θ_t − η g_t(θ_t), θ_1 = M_o, g_t a mini-batch gradient of the CE on
S_tr \\ S_f: `training.fit` on the retain rows from M_o for `budget_fraction`
of the recipe's steps (the paper: 2 … 10 epochs, i.e. 2 … 10% of its 100),
with the recipe's optimiser, batch size, warm-up and linear decay.

Learning rate: `learning_rate_scale` × the recipe's. Pawelczyk uses SGD at an
absolute 1e-3 (momentum 0.9, weight decay 5e-4, as the recipe) for a CIFAR-10
ResNet-18 whose training rate the paper does not state; the default 1.0 keeps
the recipe's own rate, which transfers across recipes (and optimisers).
"""

from __future__ import annotations

import dataclasses

import jax

from unlearnjax import training
from unlearnjax.unlearn import budgeted
from unlearnjax.unlearn.base import Method, UnlearnTask, single


@dataclasses.dataclass(frozen=True)
class GDHparams:
  budget_fraction: float = 0.05
  learning_rate_scale: float = 1.0   # × the recipe's learning rate


def unlearn(task: UnlearnTask, hparams: GDHparams, key: jax.Array):
  recipe = budgeted.budget_recipe(task, hparams.budget_fraction,
                                  hparams.learning_rate_scale)
  return training.fit(task.model, recipe, task.train, key, indices=task.retain,
                      variables=task.original, what='gd', curve=task.curve)


METHOD = Method('gd', unlearn, GDHparams, single(GDHparams))
