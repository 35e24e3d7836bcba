"""Noisy gradient descent, NGD (Chien et al. 2024; Pawelczyk A.2.2; SPEC.md,
Methods "GD / NGD").

GD with Gaussian noise on every gradient: θ_{t+1} = θ_t − η (g_t(θ_t) + ξ_t),
ξ_t ~ N(0, σ² I) drawn afresh each step (key: the method's key folded with
the step). The noise enters before the optimiser, so momentum and weight
decay act on the noisy gradient as on GD's. Otherwise exactly GD (same
budget, learning rate, and, for the same key, the same retain batches:
`noise_std=0` reproduces GD). Never reads a forget row.

Pawelczyk: σ² ∈ {1e-7, 1e-6} on CIFAR-10 (default σ = √1e-7 ≈ 3.2e-4); the
grid searches both.
"""

from __future__ import annotations

import dataclasses
import math

import jax

from unlearnjax.unlearn import budgeted
from unlearnjax.unlearn.base import Method, UnlearnTask

PAWELCZYK_NOISE_VARIANCES = (1e-7, 1e-6)


@dataclasses.dataclass(frozen=True)
class NGDHparams:
  budget_fraction: float = 0.05
  learning_rate_scale: float = 1.0   # × the recipe's learning rate
  noise_std: float = math.sqrt(1e-7)  # σ of ξ_t


def unlearn(task: UnlearnTask, hparams: NGDHparams, key: jax.Array):
  init_key, retain_rng = budgeted.fit_keys(key)
  recipe = budgeted.budget_recipe(task, hparams.budget_fraction,
                                  hparams.learning_rate_scale)
  return budgeted.run(
      task, recipe, task.original,
      [budgeted.Part(task.retain, 1.0, retain_rng)], what='ngd',
      noise_std=hparams.noise_std, noise_key=init_key)


def pawelczyk_grid(task: UnlearnTask) -> list[NGDHparams]:
  del task
  return [NGDHparams(noise_std=math.sqrt(v)) for v in PAWELCZYK_NOISE_VARIANCES]


METHOD = Method('ngd', unlearn, NGDHparams, pawelczyk_grid)
