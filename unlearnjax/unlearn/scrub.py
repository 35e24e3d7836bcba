"""SCRUB (Kurmanji et al. 2023; Goel §3.2 (5), A.2 (5)).

Student starts from M_o, teacher is M_o. Max-steps on S_f raise
KL(teacher ‖ student); min-steps on the retain set minimise
`distill_weight`·KL + CE. Max-steps only in the first `max_steps_fraction` of
the budget (Goel: 200 of 1000 steps), learning rate 0.1× the recipe's (Goel:
0.0025; the original value is unstable). Goel tunes the loss weight
`distill_weight` over {0.001 … 10} (their α) per data point.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from unlearnjax import parallel
from unlearnjax import training
from unlearnjax.unlearn import distill
from unlearnjax.unlearn.base import Method, UnlearnTask

GOEL_DISTILL_WEIGHTS = (0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 10)


@dataclasses.dataclass(frozen=True)
class ScrubHparams:
  distill_weight: float = 1.0      # Goel's / Kurmanji's α
  ce_weight: float = 1.0           # Kurmanji's γ
  budget_fraction: float = 0.25
  max_steps_fraction: float = 0.2
  learning_rate_scale: float = 0.1
  temperature: float = 4.0         # Kurmanji's kd_T


def _rng(key):
  return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())


def unlearn(task: UnlearnTask, hparams: ScrubHparams, key: jax.Array):
  forget_key, retain_key = jax.random.split(key)
  recipe = task.recipe.scaled(
      hparams.budget_fraction,
      learning_rate=task.recipe.learning_rate * hparams.learning_rate_scale)
  tx = training.make_optimizer(recipe)
  state = parallel.replicate(training.create_train_state(task.original, tx))

  def source(rows, key):
    images, labels = task.train.images[rows], task.train.labels[rows]
    teacher = training.predict_logits(task.model, task.original, images)
    return distill.BatchSource(images, labels, teacher, recipe.batch_size,
                               _rng(key))

  forget, retain = source(task.forget, forget_key), source(task.retain,
                                                            retain_key)
  # Both kinds of step in BatchNorm training mode, as Kurmanji's code does:
  # with frozen statistics the ascent on KL grows activations without bound
  # and diverges within a few steps.
  step = distill.jitted_distill_step(task.model, recipe, True)
  max_steps = int(round(hparams.max_steps_fraction * recipe.steps))

  def step_fn(state, i):
    if i < max_steps:
      state, _ = step(state, forget.next(
          ce_weight=0.0, kl_weight=-1.0, temperature=hparams.temperature))
    return step(state, retain.next(
        ce_weight=hparams.ce_weight, kl_weight=hparams.distill_weight,
        temperature=hparams.temperature))

  state, _ = training.run_steps(step_fn, state, lambda i: i, recipe.steps,
                                what='scrub')
  return jax.device_get(state.variables)


def goel_grid(task: UnlearnTask) -> list[ScrubHparams]:
  del task
  return [ScrubHparams(distill_weight=w) for w in GOEL_DISTILL_WEIGHTS]


METHOD = Method('scrub', unlearn, ScrubHparams, goel_grid)
