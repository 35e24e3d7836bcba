"""The distillation step Bad Teacher and SCRUB share.

loss = ce_weight · CE(student, label) + kl_weight · KD,
KD   = T² · mean_batch KL(softmax(teacher/T) ‖ softmax(student/T)),

KD being the corrective benchmark's `utils.distill_kl_loss` (Goel A.2; the
code sums `kl_div` over the batch, then multiplies by T²/B) and Kurmanji's
`DistillKL`. The step reports KD as its 'kl' metric, so 'loss' =
ce_weight·'ce' + kl_weight·'kl' as in the authors' `forward_pass`.

The weights and the temperature T travel in the batch as scalars, so one
compiled step serves the min-steps (weights > 0) and SCRUB's max-steps
(weights < 0); the optimiser state (SGD momentum) is the one the caller
threads through, so it carries over between both kinds of step, as the
authors' single `torch.optim.SGD` does. `train_batchnorm` picks the student's
BatchNorm mode; the teacher logits are given (SCRUB: M_o in evaluation mode).
Batches have a fixed size; a set smaller than the batch is drawn with
replacement (the mean loss is unchanged in expectation, and convolutional
BatchNorm statistics also pool over space, so even one repeated image is not
degenerate; the authors' loader gives one short batch instead).
"""

from __future__ import annotations

import functools
from typing import Callable

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from unlearnjax import parallel
from unlearnjax import training


def distillation_kl(student_logits: jax.Array, teacher_logits: jax.Array,
                    temperature) -> jax.Array:
  """T² · mean_batch KL(softmax(teacher/T) ‖ softmax(student/T)).

  The benchmark's `distill_kl_loss(y_s, y_t, T)` (torch `kl_div(...,
  reduction='sum') · T² / B`); log-probabilities from `log_softmax` on both
  sides, so no smoothing constant is needed.
  """
  log_teacher = jax.nn.log_softmax(teacher_logits / temperature)
  log_student = jax.nn.log_softmax(student_logits / temperature)
  kl = jnp.sum(jnp.exp(log_teacher) * (log_teacher - log_student), -1)
  return temperature**2 * kl.mean()


def distill_step(state: training.TrainState, batch: dict, *, model: nn.Module,
                 tx: optax.GradientTransformation, train_batchnorm: bool):
  """One step on ce_weight·CE + kl_weight·KD (module doc). Pure; jit it once.

  Returns the new state and the metrics 'loss', 'ce' and 'kl' (KD, with T²).
  """
  temperature = batch['temperature']
  chex.assert_rank(batch['image'], 4)

  def loss_fn(params):
    logits, batch_stats = training.forward(model, params, state.batch_stats,
                                           batch['image'],
                                           train=train_batchnorm)
    chex.assert_equal_shape([logits, batch['teacher_logits']])
    kl = distillation_kl(logits, batch['teacher_logits'], temperature)
    ce = training.cross_entropy(logits, batch['label'])
    loss = batch['ce_weight'] * ce + batch['kl_weight'] * kl
    return loss, (batch_stats, kl, ce)

  (loss, (batch_stats, kl, ce)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  state = training.apply_gradients(state, grads, batch_stats, tx)
  return state, {'loss': loss, 'kl': kl, 'ce': ce}


@functools.lru_cache(maxsize=64)
def jitted_distill_step(model: nn.Module, recipe: training.Recipe,
                        train_batchnorm: bool) -> Callable:
  tx = training.make_optimizer(recipe)
  return jax.jit(functools.partial(distill_step, model=model, tx=tx,
                                   train_batchnorm=train_batchnorm),
                 donate_argnums=0)


@functools.lru_cache(maxsize=64)
def jitted_distill_step_many(model: nn.Module, recipe: training.Recipe,
                             train_batchnorm: bool, count: int) -> Callable:
  """`training.many_step` of `distill_step`: `count` students per call."""
  tx = training.make_optimizer(recipe)
  return training.many_step(functools.partial(
      distill_step, model=model, tx=tx, train_batchnorm=train_batchnorm),
                            count)


class BatchSource:
  """Fixed-size batches of (image, label, teacher logits) from given rows."""

  def __init__(self, images: np.ndarray, labels: np.ndarray,
               teacher_logits: np.ndarray, batch_size: int,
               rng: np.random.Generator):
    self._images, self._labels = images, labels
    self._teacher_logits = teacher_logits.astype(np.float32)
    self._order = training.index_batches(len(labels), batch_size, rng)
    self._scalars = {}  # replicated once per distinct (weights, temperature)

  def next(self, *, ce_weight: float, kl_weight: float,
           temperature: float) -> dict:
    take = next(self._order)
    batch = parallel.shard_batch({
        'image': self._images[take], 'label': self._labels[take],
        'teacher_logits': self._teacher_logits[take]})
    return {**batch, **self.scalars(ce_weight=ce_weight, kl_weight=kl_weight,
                                    temperature=temperature)}

  def scalars(self, *, ce_weight: float, kl_weight: float,
              temperature: float) -> dict:
    """The step's weights as device scalars (replicated once per value)."""
    key = (ce_weight, kl_weight, temperature)
    if key not in self._scalars:
      self._scalars[key] = parallel.replicate({
          'ce_weight': np.float32(ce_weight),
          'kl_weight': np.float32(kl_weight),
          'temperature': np.float32(temperature)})
    return self._scalars[key]
