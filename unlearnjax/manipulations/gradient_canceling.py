"""Indiscriminate poisoning by gradient canceling (Lu et al. 2023; Pawelczyk
et al. 2024, App. A.1.3 and Alg. 2; SPEC.md "Indiscriminate gradient
canceling").

1. θ_low (GradPC; Sun et al. 2020): from a surrogate θ_clean trained on the
   clean data, projected normalised gradient ascent on the clean training
   loss within the ℓ2 ball ‖θ_low − θ_clean‖₂ ≤ ε_w (Pawelczyk: ε_w = 1):

       θ ← Proj_{B(θ_clean, ε_w)}(θ + η_w·ε_w·∇L(θ)/‖∇L(θ)‖₂).

   One step with η_w = 1 is Sun et al.'s first-order corruption; more steps
   find a worse θ_low in the same ball. ε_w is absolute, so its effect
   depends on the model's parameter scale (see `manipulate`). The ascent reads the clean TRAINING
   set, not the test set (SPEC.md: no selection on the test set).
2. P poisons initialised as random clean training samples (Alg. 2 line 2,
   labels kept); their perturbations Δ minimise (eq. 4, Alg. 2 line 6)

       L(Δ) = ½‖g_c + w·g_p(Δ)‖²,
       g_c = Ê_{S_clean}[∇θ ℓ(x, y; θ_low)],
       g_p(Δ) = Ê_{S_poison}[∇θ ℓ(x + Δ, y; θ_low)],

   by gradient descent with step η (Alg. 2 line 7; paper: 0.1; Adam here
   by default, see `manipulate`) and the
   projection onto Γ = {‖Δ‖∞ ≤ ε} (line 8; paper: ε = ∞) intersected with the
   data range. `poison_gradient_weight='paper'` is w = 1, eq. 4 as printed;
   'proportional' is w = P/|S_clean|, Lu et al.'s ε_d: then g_c + w·g_p is
   proportional to the gradient of the mean loss over S_clean ∪ S_poison, so
   L = 0 makes θ_low a stationary point of the victim's training objective.
   Gradients are taken in evaluation mode (BatchNorm statistics fixed).

The victim trains on S_clean ∪ S_poison (A.1.3): the poisons are APPENDED to
the training set (rows |S_clean|.., ids of their base rows), the clean
originals stay. affected = unaffected = the clean test set; success is the
victim's test-accuracy drop against training on S_clean alone.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from unlearnjax import parallel, training
from unlearnjax.data.split import Split
from unlearnjax.grads import padded_chunks
from unlearnjax.manipulations.base import Manipulation, host_rng
from unlearnjax.manipulations.gradient_matching import (
    check_epsilon, data_range, project, surrogate_recipe, train_surrogate)
from unlearnjax.errors import ConfigError

WEIGHTINGS = ('paper', 'proportional')
OPTIMIZERS = ('gd', 'adam')


@dataclasses.dataclass(frozen=True)
class IndiscriminatePoisoning(Manipulation):
  """A Manipulation that also keeps the crafted Δ.

  Attributes:
    perturbations: Δ, float32 (P, H, W, C), row i belongs to
      `manipulated[i]`; `train.images[manipulated] == base_images +
      perturbations`.
    base_images: the clean images the poisons started from, same order.
  """
  perturbations: np.ndarray
  base_images: np.ndarray

  def __post_init__(self):
    super().__post_init__()
    expected = (self.manipulated.size, *self.train.image_shape)
    for name in ('perturbations', 'base_images'):
      value = np.asarray(getattr(self, name), np.float32)
      if value.shape != expected:
        raise ConfigError(f'{name} has shape {value.shape}, expected '
                         f'{expected} (one row per poison, sorted like '
                         '`manipulated`).')
      object.__setattr__(self, name, value)


# ---------------------------------------------------------------------------
# Mean gradients over a data set and GradPC.


def _masked_summed_loss(params, batch_stats, images, labels, mask, *,
                        model: nn.Module):
  logits = model.apply({'params': params, 'batch_stats': batch_stats},
                       images, train=False)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  # where, not a product: a padded row's NaN must not reach the sum.
  return jnp.sum(jnp.where(mask > 0, losses, 0.0))


@functools.lru_cache(maxsize=16)
def _jitted_summed_gradient(model: nn.Module) -> Callable:
  """(Σ loss, ∇θ Σ loss) over one data-parallel chunk (like a train step)."""
  return jax.jit(jax.value_and_grad(functools.partial(_masked_summed_loss,
                                                      model=model)))


def mean_gradient(model: nn.Module, variables: training.Variables,
                  images: np.ndarray, labels: np.ndarray,
                  chunk_size: int = 1024):
  """(mean loss, Ê[∇θ ℓ]) over all rows, evaluation mode, fixed-size chunks
  split over the data mesh."""
  n = images.shape[0]
  if n == 0:
    raise ConfigError('mean_gradient: no samples')
  fn = _jitted_summed_gradient(model)
  params = parallel.replicate(variables['params'])
  batch_stats = parallel.replicate(variables['batch_stats'])
  total_loss, total = 0.0, None
  for (x, y), mask in padded_chunks((images, labels),
                                    parallel.shape_bucket(n, chunk_size)):
    loss, grad = fn(params, batch_stats, *parallel.shard_batch((x, y, mask)))
    total_loss = total_loss + loss
    total = grad if total is None else jax.tree.map(jnp.add, total, grad)
  return float(total_loss) / n, jax.tree.map(lambda g: g / n, total)


def _ball_projection(params, center, radius: float):
  """Proj onto {‖θ − center‖₂ ≤ radius} (global ℓ2 over the pytree)."""
  offset = jax.tree.map(jnp.subtract, params, center)
  norm = optax.global_norm(offset)
  scale = jnp.minimum(1.0, radius / (norm + 1e-12))
  return jax.tree.map(lambda c, o: c + scale * o, center, offset)


@jax.jit
def _ascent_step(params, grad, center, radius, step_size):
  step = jax.tree.map(
      lambda g: step_size * radius * g / (optax.global_norm(grad) + 1e-12),
      grad)
  return _ball_projection(jax.tree.map(jnp.add, params, step), center, radius)


def corrupt_parameters(model: nn.Module, variables: training.Variables,
                       images: np.ndarray, labels: np.ndarray, *,
                       parameter_bound: float, steps: int,
                       step_size_fraction: float, chunk_size: int = 1024
                       ) -> tuple[training.Variables, list[float]]:
  """θ_low by GradPC (Sun et al. 2020; Pawelczyk A.1.3): `steps` normalised
  gradient-ascent steps of length step_size_fraction·ε_w on the mean loss
  over (images, labels), each projected onto ‖θ − θ_clean‖₂ ≤ ε_w. Only
  `params` move; BatchNorm statistics are kept. Returns (θ_low, the mean
  loss before each step and after the last)."""
  if not (math.isfinite(parameter_bound) and parameter_bound > 0):
    raise ConfigError(f'parameter_bound (ε_w) must be a finite number > 0, '
                     f'got {parameter_bound}; the paper uses 1.')
  if int(steps) < 1 or not step_size_fraction > 0:
    raise ConfigError(f'corruption_steps must be >= 1 and '
                     f'corruption_step_size_fraction > 0, got {steps} and '
                     f'{step_size_fraction}')
  variables = jax.device_get(variables)
  center = variables['params']
  params = center
  losses = []
  for _ in range(int(steps)):
    loss, grad = mean_gradient(model, {**variables, 'params': params},
                               images, labels, chunk_size)
    losses.append(loss)
    params = _ascent_step(params, grad, center, float(parameter_bound),
                          float(step_size_fraction))
  low = jax.device_get({**variables, 'params': params})
  losses.append(mean_gradient(model, low, images, labels, chunk_size)[0])
  return low, losses


# ---------------------------------------------------------------------------
# The canceling objective and step (Alg. 2 lines 5-8).


@dataclasses.dataclass(frozen=True)
class CancelingConfig:
  """What the canceling step closes over (hashable: one compile per value).

  Attributes:
    epsilon: ε, the ℓ∞ bound (math.inf: unbounded, the paper's choice).
    bounds: (lo, hi) of the poisoned pixels.
    poison_gradient_weight: w in ½‖g_c + w·g_p‖².
    num_poisons: P (g_p is the mean over the P real rows).
    step_size: η (paper: 0.1).
    optimizer: 'gd' (Alg. 2 line 7) or 'adam' (η is then Adam's step).
  """
  epsilon: float
  bounds: tuple[float, float]
  poison_gradient_weight: float
  num_poisons: int
  step_size: float = 0.1
  optimizer: str = 'gd'

  def transform(self) -> optax.GradientTransformation:
    if self.optimizer == 'adam':
      return optax.adam(self.step_size)
    return optax.sgd(self.step_size)


def canceling_objective(perturbations_PHWC, base_PHWC, labels_P, mask_P,
                        clean_gradient, variables, *, model: nn.Module,
                        config: CancelingConfig) -> jax.Array:
  """½‖g_c + w·g_p(Δ)‖² (Pawelczyk eq. 4): g_p = the mean over the real
  (mask > 0) poisons of ∇θ ℓ(x + Δ, y; θ_low), evaluation mode."""
  images = jnp.clip(base_PHWC + perturbations_PHWC, *config.bounds)
  summed = jax.grad(functools.partial(_masked_summed_loss, model=model))(
      variables['params'], variables['batch_stats'], images, labels_P, mask_P)
  residual = jax.tree.map(
      lambda c, p: c + config.poison_gradient_weight * p / config.num_poisons,
      clean_gradient, summed)
  return 0.5 * sum(jnp.vdot(r, r) for r in jax.tree.leaves(residual))


def canceling_step(perturbations_PHWC, opt_state, batch: dict,
                   clean_gradient, variables, *, model: nn.Module,
                   config: CancelingConfig):
  """One descent step on the objective, then the projection onto Γ
  (Alg. 2 lines 5-8). Pure; returns (Δ, opt_state, objective before)."""
  chex.assert_equal_shape([perturbations_PHWC, batch['base']])
  objective, grad = jax.value_and_grad(canceling_objective)(
      perturbations_PHWC, batch['base'], batch['label'], batch['mask'],
      clean_gradient, variables, model=model, config=config)
  updates, opt_state = config.transform().update(grad, opt_state,
                                                 perturbations_PHWC)
  perturbations_PHWC = project(perturbations_PHWC + updates, batch['base'],
                               config.epsilon, config.bounds)
  return perturbations_PHWC, opt_state, objective


@functools.lru_cache(maxsize=16)
def jitted_canceling_step(model: nn.Module, config: CancelingConfig
                          ) -> Callable:
  """jit(canceling_step): poisons split over the data mesh (data-parallel,
  as a train step; no vmap), Δ and the optimiser state donated."""
  return jax.jit(functools.partial(canceling_step, model=model,
                                   config=config), donate_argnums=(0, 1))


@functools.lru_cache(maxsize=16)
def jitted_canceling_objective(model: nn.Module, config: CancelingConfig
                               ) -> Callable:
  """jit(canceling_objective), compiled once per (model, config) rather
  than once per call."""
  return jax.jit(functools.partial(canceling_objective, model=model,
                                   config=config))


def cancel_gradients(model: nn.Module, low_variables: training.Variables,
                     clean_gradient, base_images: np.ndarray,
                     labels: np.ndarray, *, config: CancelingConfig,
                     steps: int, sync_every: int = 10
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Alg. 2 lines 4-8 from Δ = 0: returns (Δ (P, H, W, C), the objective
  before each step and after the last, length steps + 1)."""
  num = base_images.shape[0]
  chex.assert_shape(labels, (num,))
  if int(steps) < 1:
    raise ConfigError(f'canceling_steps must be >= 1, got {steps}')
  padded = parallel.round_up_to_devices(num)
  pad = padded - num
  base = np.concatenate([base_images, np.zeros((pad, *base_images.shape[1:]),
                                               np.float32)])
  batch = parallel.shard_batch({
      'base': base,
      'label': np.concatenate([labels, np.zeros(pad, labels.dtype)]),
      'mask': (np.arange(padded) < num).astype(np.float32)})
  perturbations = parallel.shard_batch(np.zeros_like(base))
  opt_state = config.transform().init(perturbations)
  variables = parallel.replicate(jax.device_get(low_variables))
  clean_gradient = parallel.replicate(jax.device_get(clean_gradient))
  step_fn = jitted_canceling_step(model, config)
  history = []
  for step in range(int(steps)):
    perturbations, opt_state, objective = step_fn(
        perturbations, opt_state, batch, clean_gradient, variables)
    history.append(objective)
    if (step + 1) % sync_every == 0:
      jax.block_until_ready(objective)
  final = jitted_canceling_objective(model, config)(
      perturbations, batch['base'], batch['label'], batch['mask'],
      clean_gradient, variables)
  history = np.asarray(jax.device_get(history + [final]), np.float64)
  if not np.all(np.isfinite(history)):
    raise FloatingPointError(
        'gradient canceling: the objective became NaN/inf; lower '
        'canceling_step_size or bound the perturbations (epsilon).')
  return np.asarray(parallel.gather_to_host(perturbations))[:num], history


def resolve_poison_gradient_weight(weighting: str | float, num_poisons: int,
                           num_clean: int) -> float:
  """w: 'paper' = 1 (eq. 4 as printed), 'proportional' = P/|S_clean|
  (Lu et al.'s ε_d), or a number."""
  if isinstance(weighting, str):
    if weighting not in WEIGHTINGS:
      raise ConfigError(f'Unknown poison_gradient_weight {weighting!r}; valid:'
                       f' {", ".join(WEIGHTINGS)} or a number > 0.')
    return 1.0 if weighting == 'paper' else num_poisons / num_clean
  if not (math.isfinite(weighting) and weighting > 0):
    raise ConfigError(f'poison_gradient_weight must be > 0, got {weighting}')
  return float(weighting)


def manipulate(train: Split, test: Split, *, seed: int,
               poison_fraction: float = 0.025, num_poisons: int = 0,
               epsilon: float | None = None,
               poison_gradient_weight: str | float = 'paper',
               canceling_steps: int = 1000, canceling_step_size: float = 0.01,
               canceling_optimizer: str = 'adam',
               parameter_bound: float = 0.02, corruption_steps: int = 20,
               corruption_step_size_fraction: float = 0.25,
               clip_to_data_range: bool = True,
               model: str = 'small_cnn', model_kwargs: dict | None = None,
               surrogate_steps: int = 600, surrogate_batch_size: int = 128,
               surrogate_learning_rate: float = 0.05,
               surrogate_weight_decay: float = 5e-4,
               surrogate_variables: training.Variables | None = None
               ) -> IndiscriminatePoisoning:
  """Gradient-canceling poisons (Pawelczyk Alg. 2), appended to `train`.

  Args:
    poison_fraction: P / |S_clean| (Pawelczyk: 1.5%, 2%, 2.5%); ignored when
      `num_poisons` > 0.
    num_poisons: P directly.
    epsilon: ε, the ℓ∞ bound in image units; None = unbounded (the paper),
      still clipped to the data range when `clip_to_data_range`.
    poison_gradient_weight: 'paper' (w = 1), 'proportional'
      (w = P/|S_clean|) or a number; see the module docstring.
    canceling_steps: full-batch steps on Δ (paper: 1000 epochs).
    canceling_step_size: η (paper: 0.1 with 'gd').
    canceling_optimizer: 'gd' (paper) or 'adam' (default: on the 16x16
      digits with the small CNN, GD with η = 0.1 diverged, the objective
      rising from 5.4e4 to 5.7e5 in 300 steps; Adam with η = 0.01 cut it
      from 8.8e3 to 73 in 200).
    parameter_bound: ε_w of GradPC (paper: 1 for a ResNet-18). ε_w is
      absolute and scale-dependent: on the width-16 small CNN (‖θ‖ ≈ 18,
      16x16 digits) ε_w = 1 leaves a θ_low at chance (10% training
      accuracy), 0.03 at 55%, 0.02 (default) at 83%.
    corruption_steps, corruption_step_size_fraction: GradPC's ascent steps
      and their length as a share of ε_w.
    model, model_kwargs, surrogate_*: the surrogate θ_clean and its recipe
      (train the victim with the same, `info['surrogate']`).
    surrogate_variables: an already trained θ_clean (skips training).

  Returns:
    An IndiscriminatePoisoning; info records the settings, the clean and
    θ_low training accuracy and loss, and the objective before/after.
  """
  check_epsilon(epsilon, allow_none=True)
  if canceling_optimizer not in OPTIMIZERS:
    raise ConfigError(f'Unknown canceling_optimizer {canceling_optimizer!r}; '
                     f'valid: {", ".join(OPTIMIZERS)}.')
  if not (math.isfinite(canceling_step_size) and canceling_step_size > 0):
    raise ConfigError(f'canceling_step_size must be > 0, got '
                     f'{canceling_step_size}')
  num = int(num_poisons) or int(round(poison_fraction * len(train)))
  if not 0 < num <= len(train):
    raise ConfigError(
        f'Gradient canceling needs 1..{len(train)} poisons, got {num} '
        f'(poison_fraction={poison_fraction}, num_poisons={num_poisons}); '
        'raise the budget.')
  weight = resolve_poison_gradient_weight(poison_gradient_weight, num,
                                          len(train))
  recipe = surrogate_recipe(steps=surrogate_steps,
                            batch_size=surrogate_batch_size,
                            learning_rate=surrogate_learning_rate,
                            weight_decay=surrogate_weight_decay)
  model_kwargs = dict(model_kwargs) if model_kwargs is not None else {
      'width': 16}
  surrogate, clean_variables = train_surrogate(
      train, seed=seed, purpose='gradient_canceling/surrogate',
      model_name=model, model_kwargs=model_kwargs, recipe=recipe,
      variables=surrogate_variables)
  low_variables, corruption_losses = corrupt_parameters(
      surrogate, clean_variables, train.images, train.labels,
      parameter_bound=parameter_bound, steps=corruption_steps,
      step_size_fraction=corruption_step_size_fraction)
  _, clean_gradient = mean_gradient(surrogate, low_variables, train.images,
                                    train.labels)
  rows = np.sort(host_rng(seed, 'gradient_canceling/poison_rows').choice(
      len(train), num, replace=False))
  bounds = data_range(train, clip_to_data_range)
  config = CancelingConfig(
      epsilon=math.inf if epsilon is None else float(epsilon), bounds=bounds,
      poison_gradient_weight=weight, num_poisons=num,
      step_size=float(canceling_step_size), optimizer=canceling_optimizer)
  base = train.images[rows].copy()
  perturbations, objective = cancel_gradients(
      surrogate, low_variables, clean_gradient, base, train.labels[rows],
      config=config, steps=canceling_steps)
  poisons = np.clip(base + perturbations, *bounds).astype(np.float32)
  n_clean = len(train)
  poisoned = Split(np.concatenate([train.images, poisons]),
                   np.concatenate([train.labels, train.labels[rows]]),
                   train.num_classes,
                   np.concatenate([train.ids, train.ids[rows]]))
  manipulated = n_clean + np.arange(num)
  return IndiscriminatePoisoning(
      train=poisoned, manipulated=manipulated,
      manipulated_clean_labels=train.labels[rows].copy(), affected=test,
      unaffected=test,
      info={'num_poisons': num, 'poison_rows': rows.tolist(),
            'epsilon': None if epsilon is None else float(epsilon),
            'poison_gradient_weight': weight,
            'canceling_steps': int(canceling_steps),
            'canceling_step_size': float(canceling_step_size),
            'canceling_optimizer': canceling_optimizer,
            'parameter_bound': float(parameter_bound),
            'corruption_steps': int(corruption_steps),
            'clean_train_loss': corruption_losses[0],
            'low_train_loss': corruption_losses[-1],
            'clean_train_accuracy': training.accuracy(
                surrogate, clean_variables, train),
            'low_train_accuracy': training.accuracy(surrogate, low_variables,
                                                    train),
            'objective_initial': float(objective[0]),
            'objective_final': float(objective[-1]),
            'data_range': list(bounds),
            'surrogate': {'model': model, 'model_kwargs': model_kwargs,
                          'recipe': dataclasses.asdict(recipe)}},
      perturbations=poisons - base, base_images=base)
