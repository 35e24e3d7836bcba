"""Targeted poisoning by gradient matching (Witches' Brew; Geiping et al.
2021; Pawelczyk et al. 2024, App. A.1.1 and Alg. 1; SPEC.md "Targeted
gradient matching").

For each target test image x_t (true label y_t) an adversarial label
y_adv ≠ y_t is drawn and P training images whose true label is y_adv are
perturbed, x_i ← x_i + Δ_i with ‖Δ_i‖∞ ≤ ε, labels kept (a clean-label
attack), so that their summed training gradient on a surrogate model θ points
the way the target's gradient with the adversarial label does (A.1.1 eq. 3):

    φ(Δ, θ) = 1 − cos(∇θ ℓ(f(x_t; θ), y_adv), Σ_i ∇θ ℓ(f(x_i + Δ_i; θ), y_adv)).

Alg. 1: R restarts, each from Δ ~ U[−ε, ε], M Adam steps on φ with a
projection onto {‖Δ‖∞ ≤ ε} (and onto the data range, as Geiping et al.'s
code clamps x + Δ to valid images) after every step; the restart with the
smallest φ wins. φ is evaluated on the surrogate trained on the clean data
(θ_clean), in evaluation mode (BatchNorm statistics fixed).

Ingredients Geiping et al. need for success, all here: restarts (default 4;
they use 8), differentiable data augmentation while crafting (random integer
shifts with edge padding, optional flips; the poisons' gradient is taken on
a fresh augmentation each step), and a victim trained like the surrogate
(`info['surrogate']` records the model and recipe used).

Several targets per manipulation (`num_targets`), each with its own P
poisons of its own adversarial class (disjoint rows), so one victim gives a
success rate. Every (target, restart) pair is one crafting job; the jobs are
vmapped and split over the devices with `shard_map` (no collective).

D_m (`affected`): the target images with their TRUE labels; `unaffected`:
the rest of the test set. `target_success` is the share of targets a model
predicts as their adversarial label (Pawelczyk §4: the attack succeeds on a
target when the victim assigns it y_adv).

Scale: ε is absolute in the units of `train.images` ([0, 1] for the digits);
the paper's ε = 16 on [0, 255] pixels is 16/255 here.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from unlearnjax import models, parallel, training
from unlearnjax.data.split import Split
from unlearnjax.manipulations.base import Manipulation, host_rng
from unlearnjax.errors import ConfigError

# Pawelczyk A.1.1: ε = 16 on [0, 255] pixels, P = 1.5% of the training set.
PAPER_EPSILON = 16 / 255
PAPER_POISON_FRACTION = 0.015
# Geiping et al.'s schedule: Adam's step drops ×0.1 at 3/8, 5/8, 7/8 of M.
_DECAY_POINTS = (3 / 8, 5 / 8, 7 / 8)


@dataclasses.dataclass(frozen=True)
class TargetedPoisoning(Manipulation):
  """A Manipulation that also keeps the targets and the crafted Δ.

  Attributes:
    target_images: x_t, float32 (T, H, W, C), the test images attacked
      (the same images as `affected.images`).
    target_labels: y_t, int32 (T,), their true labels.
    adversarial_labels: y_adv, int32 (T,), the label each target should get.
    perturbations: Δ, float32 (P_total, H, W, C), row i belongs to
      `manipulated[i]`; `train.images[manipulated] == base_images +
      perturbations`.
    base_images: the clean images of the poisoned rows, same order.
    poison_targets: int32 (P_total,), which target (0..T-1) each poison
      serves.
  """
  target_images: np.ndarray
  target_labels: np.ndarray
  adversarial_labels: np.ndarray
  perturbations: np.ndarray
  base_images: np.ndarray
  poison_targets: np.ndarray

  def __post_init__(self):
    super().__post_init__()
    num_targets = np.asarray(self.target_labels).shape[0]
    image_shape = self.train.image_shape
    expected = {
        'target_images': ((num_targets, *image_shape), np.float32),
        'target_labels': ((num_targets,), np.int32),
        'adversarial_labels': ((num_targets,), np.int32),
        'perturbations': ((self.manipulated.size, *image_shape), np.float32),
        'base_images': ((self.manipulated.size, *image_shape), np.float32),
        'poison_targets': ((self.manipulated.size,), np.int32),
    }
    for name, (shape, dtype) in expected.items():
      value = np.asarray(getattr(self, name), dtype)
      if value.shape != shape:
        raise ConfigError(f'{name} has shape {value.shape}, expected {shape} '
                         '(poison rows sorted like `manipulated`).')
      object.__setattr__(self, name, value)
    if np.any(self.target_labels == self.adversarial_labels):
      raise ConfigError('an adversarial label equals its target\'s true label')

  @property
  def epsilon(self) -> float:
    """ε, the ℓ∞ bound on every Δ_i."""
    return float(self.info['epsilon'])


# ---------------------------------------------------------------------------
# Pieces shared with gradient_canceling.


def surrogate_recipe(*, steps: int, batch_size: int, learning_rate: float,
                     weight_decay: float) -> training.Recipe:
  """The crafting (surrogate) model's recipe; the victim should reuse it."""
  for name, value in (('surrogate_steps', steps),
                      ('surrogate_batch_size', batch_size)):
    if int(value) < 1:
      raise ConfigError(f'{name} must be >= 1, got {value}')
  if not learning_rate > 0:
    raise ConfigError(f'surrogate_learning_rate must be > 0, got '
                     f'{learning_rate}')
  return training.Recipe(steps=int(steps), batch_size=int(batch_size),
                         learning_rate=float(learning_rate),
                         weight_decay=float(weight_decay))


def train_surrogate(train: Split, *, seed: int, purpose: str, model_name: str,
                    model_kwargs: dict | None, recipe: training.Recipe,
                    variables: training.Variables | None = None
                    ) -> tuple[nn.Module, training.Variables]:
  """θ_clean: `model_name` trained with `recipe` on the clean `train`
  (Alg. 1 line 1; Alg. 2's θ_low starts from it). Skipped when `variables`
  (an already trained surrogate) are given."""
  model = models.get_model(model_name, train.num_classes,
                           **dict(model_kwargs or {}))
  if variables is None:
    key_seed = int(host_rng(seed, purpose).integers(0, 2**31 - 1))
    variables = training.fit(model, recipe, train, jax.random.key(key_seed),
                             what=f'{purpose} (surrogate)')
  return model, jax.device_get(variables)


def data_range(train: Split, clip_to_data_range: bool) -> tuple[float, float]:
  """(lo, hi) every poisoned pixel is clipped to; ±inf when not clipping."""
  if not clip_to_data_range:
    return (-math.inf, math.inf)
  return (float(train.images.min()), float(train.images.max()))


def project(perturbations: jax.Array, base_images: jax.Array, epsilon: float,
            bounds: tuple[float, float]) -> jax.Array:
  """Projection onto Γ = {‖Δ‖∞ ≤ ε} ∩ {lo ≤ x + Δ ≤ hi} (A.1.1, A.1.3).

  Clipping Δ to [−ε, ε] and then x + Δ to [lo, hi] lands in both sets
  because x itself lies in [lo, hi]."""
  perturbations = jnp.clip(perturbations, -epsilon, epsilon)
  return jnp.clip(base_images + perturbations, *bounds) - base_images


def check_epsilon(epsilon: float | None, *, allow_none: bool = False) -> None:
  if epsilon is None and allow_none:
    return
  if epsilon is None or not (math.isfinite(epsilon) and epsilon > 0):
    raise ConfigError(
        f'epsilon (the l-inf perturbation bound) must be a finite number > 0 '
        f'in the units of the images, got {epsilon}; the paper uses 16/255 '
        'on [0, 1] pixels.')


def poisons_per_target(num_train: int, *, poison_fraction: float,
                       num_poisons: int, num_targets: int) -> int:
  """P per target: the budget (num_poisons, or round(poison_fraction·|S_tr|))
  split evenly over the targets."""
  if int(num_targets) < 1:
    raise ConfigError(f'num_targets must be >= 1, got {num_targets}')
  total = int(num_poisons) or int(round(poison_fraction * num_train))
  per_target = total // int(num_targets)
  if per_target < 1 or total > num_train:
    raise ConfigError(
        f'The poison budget gives {per_target} poisons per target '
        f'({total} in all for {num_targets} targets, poison_fraction='
        f'{poison_fraction}, num_poisons={num_poisons}); raise poison_fraction'
        f' or num_poisons so every target gets >= 1 (at most {num_train}).')
  return per_target


# ---------------------------------------------------------------------------
# Differentiable augmentation (Geiping et al. §4: crafting under augmentation).


def augment(images_PHWC: jax.Array, key: jax.Array, *, max_shift: int,
            flip: bool) -> jax.Array:
  """Random integer shifts in [−max_shift, max_shift]² (edge padding) and,
  if `flip`, random horizontal flips; differentiable in the images."""
  num, height, width, _ = images_PHWC.shape
  shift_key, flip_key = jax.random.split(key)
  if max_shift > 0:
    offsets = jax.random.randint(shift_key, (num, 2), 0, 2 * max_shift + 1)
    padded = jnp.pad(images_PHWC, ((0, 0), (max_shift, max_shift),
                                   (max_shift, max_shift), (0, 0)),
                     mode='edge')
    images_PHWC = jax.vmap(lambda image, offset: jax.lax.dynamic_slice(
        image, (offset[0], offset[1], 0), (height, width, image.shape[-1])))(
            padded, offsets)
  if flip:
    flips = jax.random.bernoulli(flip_key, 0.5, (num, 1, 1, 1))
    images_PHWC = jnp.where(flips, images_PHWC[:, :, ::-1], images_PHWC)
  return images_PHWC


# ---------------------------------------------------------------------------
# The crafting objective and step (Alg. 1 lines 4-7).


def parameter_gradient(model: nn.Module, variables: training.Variables,
                       images: jax.Array, labels: jax.Array):
  """∇θ Σ_i ℓ(f(x_i; θ), y_i), model in evaluation mode."""
  batch_stats = variables['batch_stats']

  def summed_loss(params):
    logits = model.apply({'params': params, 'batch_stats': batch_stats},
                         images, train=False)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, labels).sum()

  return jax.grad(summed_loss)(variables['params'])


def cosine_distance(grad_a, grad_b) -> jax.Array:
  """1 − cos(a, b) over whole parameter pytrees (A.1.1 eq. 3)."""
  dot = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(grad_a),
                                           jax.tree.leaves(grad_b)))
  return 1.0 - dot / (optax.global_norm(grad_a) * optax.global_norm(grad_b)
                      + 1e-12)


@dataclasses.dataclass(frozen=True)
class CraftingConfig:
  """What the crafting step closes over (hashable: one compile per value).

  Attributes:
    epsilon: ε, the ℓ∞ bound.
    bounds: (lo, hi) of the poisoned pixels.
    steps: M, Adam steps per restart (sets the decay schedule).
    learning_rate_fraction: Adam's initial step size as a share of ε
      (Geiping et al.: 0.1·ε, ×0.1 at 3/8, 5/8 and 7/8 of M).
    max_shift: augmentation shift in pixels (0: no shifts).
    flip: random horizontal flips while crafting.
  """
  epsilon: float
  bounds: tuple[float, float]
  steps: int
  learning_rate_fraction: float = 0.1
  max_shift: int = 0
  flip: bool = False

  def optimizer(self) -> optax.GradientTransformation:
    peak = self.learning_rate_fraction * self.epsilon
    boundaries = {max(1, int(round(f * self.steps))): 0.1
                  for f in _DECAY_POINTS}
    return optax.adam(optax.piecewise_constant_schedule(peak, boundaries))


def matching_loss(perturbations_PHWC: jax.Array, base_PHWC: jax.Array,
                  adversarial_label: jax.Array, target_grad,
                  key: jax.Array | None, *, model: nn.Module,
                  variables: training.Variables, config: CraftingConfig
                  ) -> jax.Array:
  """φ(Δ, θ_clean) of one target's poisons (A.1.1 eq. 3); with `key`, the
  poisons are augmented first (a fresh draw per key)."""
  images = jnp.clip(base_PHWC + perturbations_PHWC, *config.bounds)
  if key is not None and (config.max_shift > 0 or config.flip):
    images = augment(images, key, max_shift=config.max_shift,
                     flip=config.flip)
  labels = jnp.full((images.shape[0],), adversarial_label, jnp.int32)
  poison_grad = parameter_gradient(model, variables, images, labels)
  return cosine_distance(poison_grad, target_grad)


class CraftState(NamedTuple):
  """Per job (one target × one restart): Δ and Adam's state."""
  perturbations: jax.Array  # (J, P, H, W, C)
  opt_state: Any


def job_step(perturbations_PHWC, opt_state, base_PHWC, adversarial_label,
             target_grad, key, step, *, model, variables, config, tx):
  """One Adam step on φ for one job, then the projection (Alg. 1 line 7).
  `key` is raw key data (uint32, shards like any array); returns (Δ,
  opt_state, φ before the step)."""
  step_key = jax.random.fold_in(jax.random.wrap_key_data(key), step)
  loss, grad = jax.value_and_grad(matching_loss)(
      perturbations_PHWC, base_PHWC, adversarial_label, target_grad,
      step_key, model=model, variables=variables, config=config)
  updates, opt_state = tx.update(grad, opt_state, perturbations_PHWC)
  perturbations_PHWC = project(perturbations_PHWC + updates, base_PHWC,
                               config.epsilon, config.bounds)
  return perturbations_PHWC, opt_state, loss


def craft_step(state: CraftState, base_JPHWC, adversarial_labels_J,
               target_grads_J, keys_J, step, variables, *, model: nn.Module,
               config: CraftingConfig) -> tuple[CraftState, jax.Array]:
  """All jobs' step, vmapped over jobs (targets × restarts). Pure."""
  chex.assert_equal_shape([state.perturbations, base_JPHWC])
  step_fn = functools.partial(job_step, model=model, variables=variables,
                              config=config, tx=config.optimizer())
  perturbations, opt_state, loss_J = jax.vmap(
      step_fn, in_axes=(0, 0, 0, 0, 0, 0, None))(
          state.perturbations, state.opt_state, base_JPHWC,
          adversarial_labels_J, target_grads_J, keys_J, step)
  return CraftState(perturbations, opt_state), loss_J


def final_losses(perturbations_JPHWC, base_JPHWC, adversarial_labels_J,
                 target_grads_J, variables, *, model: nn.Module,
                 config: CraftingConfig) -> jax.Array:
  """φ of every job without augmentation (Alg. 1 line 8 picks by it)."""
  def one_job(perturbations, base, label, target_grad):
    return matching_loss(perturbations, base, label, target_grad, None,
                         model=model, variables=variables, config=config)

  return jax.vmap(one_job)(perturbations_JPHWC, base_JPHWC,
                           adversarial_labels_J, target_grads_J)


def _per_device(fn: Callable, num_job_args: int, num_replicated: int):
  """jit(shard_map(fn)): the first `num_job_args` arguments are split over
  the devices along the job axis, the rest replicated; jobs are independent,
  so no collective (check_vma=False: no psum sneaks into the gradients)."""
  data = P(parallel.DATA_AXIS)
  return jax.shard_map(fn, mesh=parallel.data_mesh(),
                       in_specs=(data,) * num_job_args
                       + (P(),) * num_replicated,
                       out_specs=data, check_vma=False)


@functools.lru_cache(maxsize=16)
def jitted_craft_step(model: nn.Module, config: CraftingConfig) -> Callable:
  """jit(shard_map(craft_step)) over the job axis; state donated."""

  def local(perturbations, opt_state, base, labels, target_grads, keys, step,
            variables):
    state, loss = craft_step(CraftState(perturbations, opt_state), base,
                             labels, target_grads, keys, step, variables,
                             model=model, config=config)
    return state.perturbations, state.opt_state, loss

  sharded = _per_device(local, 6, 2)

  def step_fn(state, base, labels, target_grads, keys, step, variables):
    perturbations, opt_state, loss = sharded(
        state.perturbations, state.opt_state, base, labels, target_grads,
        keys, step, variables)
    return CraftState(perturbations, opt_state), loss

  return jax.jit(step_fn, donate_argnums=0)


@functools.lru_cache(maxsize=16)
def _jitted_final_losses(model: nn.Module, config: CraftingConfig) -> Callable:
  return jax.jit(_per_device(functools.partial(
      final_losses, model=model, config=config), 4, 1))


@functools.lru_cache(maxsize=16)
def _jitted_target_gradients(model: nn.Module) -> Callable:
  """∇θ ℓ(f(x_t; θ), y_adv) per target (vmapped)."""
  return jax.jit(jax.vmap(
      lambda variables, image, label: parameter_gradient(
          model, variables, image[None], label[None]),
      in_axes=(None, 0, 0)))


def _initial_perturbations(keys_J, shape, epsilon):
  """Δ ~ U[−ε, ε] per job (Alg. 1 line 4)."""
  return jax.vmap(lambda k: jax.random.uniform(
      k, shape, jnp.float32, -epsilon, epsilon))(keys_J)


class CraftResult(NamedTuple):
  """Outcome of Alg. 1 for T targets.

  perturbations: Δ*, (T, P, H, W, C), the best restart per target.
  best_loss: (T,), φ(Δ*, θ_clean) without augmentation.
  restart_losses: (T, R), φ of every restart's final Δ.
  loss_history: (M, T, R), φ (under augmentation) before each step.
  """
  perturbations: np.ndarray
  best_loss: np.ndarray
  restart_losses: np.ndarray
  loss_history: np.ndarray


def craft_perturbations(model: nn.Module, variables: training.Variables,
                        base_images_TPHWC: np.ndarray,
                        adversarial_labels_T: np.ndarray,
                        target_images_THWC: np.ndarray, *, key: jax.Array,
                        config: CraftingConfig, restarts: int,
                        sync_every: int = 10) -> CraftResult:
  """Alg. 1 lines 3-8 for T targets at once: R restarts of M projected Adam
  steps on φ; keeps, per target, the restart with the smallest φ.

  Job j = t·R + r (target t, restart r) starts from Δ ~ U[−ε, ε] drawn with
  fold_in(fold_in(key, t), r). Jobs are padded to a multiple of the device
  count with copies of job 0 that are never picked.
  """
  base = np.asarray(base_images_TPHWC, np.float32)
  num_targets, num_poisons = base.shape[:2]
  chex.assert_shape(adversarial_labels_T, (num_targets,))
  chex.assert_shape(target_images_THWC, (num_targets, *base.shape[2:]))
  if int(restarts) < 1:
    raise ConfigError(f'restarts must be >= 1, got {restarts}')
  if int(config.steps) < 1:
    raise ConfigError(f'crafting_steps must be >= 1, got {config.steps}')
  check_epsilon(config.epsilon)
  restarts = int(restarts)
  labels = np.asarray(adversarial_labels_T, np.int32)
  variables = jax.device_get(variables)
  target_grads = _jitted_target_gradients(model)(
      variables, jnp.asarray(target_images_THWC, jnp.float32),
      jnp.asarray(labels))

  num_jobs = num_targets * restarts
  padded_jobs = parallel.round_up_to_devices(num_jobs)
  job_target = np.arange(padded_jobs) // restarts
  job_target[num_jobs:] = 0  # padding: copies of job 0
  job_restart = np.arange(padded_jobs) % restarts
  job_restart[num_jobs:] = 0
  keys = jax.vmap(lambda t, r: jax.random.fold_in(
      jax.random.fold_in(key, t), r))(jnp.asarray(job_target),
                                      jnp.asarray(job_restart))
  init_keys, step_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
  step_keys = jax.random.key_data(step_keys)
  job_base = base[job_target]
  job_labels = labels[job_target]
  job_grads = jax.tree.map(lambda g: np.asarray(g)[job_target], target_grads)

  tx = config.optimizer()
  perturbations = _initial_perturbations(init_keys, base.shape[1:],
                                         config.epsilon)
  perturbations = jax.vmap(project, in_axes=(0, 0, None, None))(
      perturbations, job_base, config.epsilon, config.bounds)
  state = CraftState(perturbations, jax.vmap(tx.init)(perturbations))
  state, job_base, job_labels, job_grads, step_keys = parallel.shard_batch(
      (jax.device_get(state), job_base, job_labels, job_grads,
       jax.device_get(step_keys)))
  variables = parallel.replicate(variables)
  step_fn = jitted_craft_step(model, config)
  history = []
  for step in range(int(config.steps)):
    state, loss = step_fn(state, job_base, job_labels, job_grads, step_keys,
                          jnp.asarray(step, jnp.int32), variables)
    history.append(loss)
    if (step + 1) % sync_every == 0:
      jax.block_until_ready(loss)
  final = _jitted_final_losses(model, config)(
      state.perturbations, job_base, job_labels, job_grads, variables)
  final = np.asarray(parallel.gather_to_host(final))[:num_jobs]
  history = np.stack([np.asarray(parallel.gather_to_host(h))[:num_jobs]
                      for h in history])
  restart_losses = final.reshape(num_targets, restarts)
  if not np.all(np.isfinite(restart_losses)):
    raise FloatingPointError(
        'gradient matching: the crafting loss became NaN/inf; lower '
        'crafting_learning_rate_fraction or check the inputs.')
  best = restart_losses.argmin(axis=1)
  all_perturbations = np.asarray(parallel.gather_to_host(
      state.perturbations))[:num_jobs].reshape(
          num_targets, restarts, *base.shape[1:])
  chosen = all_perturbations[np.arange(num_targets), best]
  return CraftResult(
      perturbations=chosen,
      best_loss=restart_losses[np.arange(num_targets), best],
      restart_losses=restart_losses,
      loss_history=history.reshape(-1, num_targets, restarts))


# ---------------------------------------------------------------------------
# Choosing targets and poisons, and the manipulation.


def _choose_targets(train: Split, test: Split, rng: np.random.Generator, *,
                    num_targets: int, per_target: int,
                    target_class: int | None,
                    adversarial_label: int | None):
  """Target test rows, their adversarial labels and the poison rows
  (A.1.1: random target class, a target image of that class, a random
  adversarial class and P training images of that class)."""
  num_classes = train.num_classes
  for name, value in (('target_class', target_class),
                      ('adversarial_label', adversarial_label)):
    if value is not None and not 0 <= int(value) < num_classes:
      raise ConfigError(f'{name} {value} outside [0, {num_classes}).')
  if (target_class is not None and adversarial_label is not None
      and int(target_class) == int(adversarial_label)):
    raise ConfigError('adversarial_label must differ from target_class.')
  free_test = {c: list(rng.permutation(np.flatnonzero(test.labels == c)))
               for c in range(num_classes)}
  free_train = {c: list(rng.permutation(np.flatnonzero(train.labels == c)))
                for c in range(num_classes)}
  if target_class is not None and len(free_test[int(target_class)]) < \
      num_targets:
    raise ConfigError(
        f'target_class {target_class} has {len(free_test[int(target_class)])}'
        f' test images, fewer than num_targets={num_targets}; choose a class '
        'present in the test set or fewer targets.')
  if adversarial_label is not None and len(
      free_train[int(adversarial_label)]) < num_targets * per_target:
    raise ConfigError(
        f'adversarial_label {adversarial_label} has '
        f'{len(free_train[int(adversarial_label)])} training images, fewer '
        f'than the {num_targets * per_target} poisons asked for; lower the '
        'poison budget or num_targets, or pick another class.')
  target_rows, adversarial, poison_rows = [], [], []
  for t in range(num_targets):
    classes = ([int(target_class)] if target_class is not None else
               [c for c in range(num_classes) if free_test[c]])
    if not classes:
      raise ConfigError('The test set has no image left to target; lower '
                       'num_targets.')
    true_class = int(rng.choice(classes))
    target_rows.append(int(free_test[true_class].pop()))
    candidates = ([int(adversarial_label)] if adversarial_label is not None
                  else [c for c in range(num_classes) if c != true_class
                        and len(free_train[c]) >= per_target])
    if not candidates:
      raise ConfigError(
          f'target {t}: no class other than {true_class} has {per_target} '
          'unused training images to poison; lower the poison budget or '
          'num_targets.')
    adv = int(rng.choice(candidates))
    adversarial.append(adv)
    poison_rows.append(np.asarray([free_train[adv].pop()
                                   for _ in range(per_target)], np.int64))
  return (np.asarray(target_rows, np.int64), np.asarray(adversarial, np.int32),
          np.stack(poison_rows))


def default_max_shift(image_size: int) -> int:
  """Augmentation shift: 1/8 of the side (4 px on 32x32, as a random crop
  with 4-pixel padding on CIFAR; 1 px on the 8x8 digits)."""
  return max(1, int(round(image_size / 8)))


def manipulate(train: Split, test: Split, *, seed: int,
               poison_fraction: float = PAPER_POISON_FRACTION,
               num_poisons: int = 0, num_targets: int = 1,
               target_class: int | None = None,
               adversarial_label: int | None = None,
               epsilon: float = PAPER_EPSILON, restarts: int = 4,
               crafting_steps: int = 240,
               crafting_learning_rate_fraction: float = 0.1,
               augment: bool = True, augment_shift: int = 0,
               augment_flip: bool = False, clip_to_data_range: bool = True,
               model: str = 'small_cnn', model_kwargs: dict | None = None,
               surrogate_steps: int = 600, surrogate_batch_size: int = 128,
               surrogate_learning_rate: float = 0.05,
               surrogate_weight_decay: float = 5e-4,
               surrogate_variables: training.Variables | None = None
               ) -> TargetedPoisoning:
  """Witches' Brew poisons for `num_targets` test images (Pawelczyk Alg. 1).

  Args:
    poison_fraction: the whole budget Σ_t P / |S_tr| (Pawelczyk: 1.5%);
      ignored when `num_poisons` > 0. Split evenly over the targets.
    num_poisons: the whole budget directly.
    num_targets: T, targets attacked at once, each with its own P poisons of
      its own adversarial class (disjoint rows).
    target_class, adversarial_label: fix y_t / y_adv for every target
      (None: drawn at random per target, as A.1.1).
    epsilon: ε, the ℓ∞ bound in image units (paper: 16/255 on [0, 1]).
    restarts: R (Geiping et al.: 8).
    crafting_steps: M, Adam steps per restart (Geiping et al.: 240).
    crafting_learning_rate_fraction: Adam's step as a share of ε.
    augment: differentiable augmentation while crafting.
    augment_shift: shift in pixels (0: `default_max_shift`).
    augment_flip: random horizontal flips too (off: digits are not
      mirror-symmetric).
    clip_to_data_range: keep x + Δ within the training pixels' [min, max].
    model, model_kwargs: the surrogate architecture (registry name).
    surrogate_steps, surrogate_batch_size, surrogate_learning_rate,
      surrogate_weight_decay: its recipe (SGD, Goel A.1 schedule); train the
      victim with the same (`info['surrogate']`) for the paper's setting.
    surrogate_variables: an already trained surrogate (skips training).

  Returns:
    A TargetedPoisoning; `affected` = the targets with their true labels,
    `unaffected` = the other test images; info records the settings, each
    target's test row, labels and best φ, and the surrogate's recipe.
  """
  check_epsilon(epsilon)
  per_target = poisons_per_target(len(train), poison_fraction=poison_fraction,
                                  num_poisons=num_poisons,
                                  num_targets=num_targets)
  num_targets = int(num_targets)
  if int(restarts) < 1 or int(crafting_steps) < 1:
    raise ConfigError(f'restarts and crafting_steps must be >= 1, got '
                     f'{restarts} and {crafting_steps}')
  if not crafting_learning_rate_fraction > 0:
    raise ConfigError('crafting_learning_rate_fraction must be > 0, got '
                     f'{crafting_learning_rate_fraction}')
  if augment_shift < 0:
    raise ConfigError(f'augment_shift must be >= 0, got {augment_shift}')
  target_rows, adversarial, poison_rows_TP = _choose_targets(
      train, test, host_rng(seed, 'gradient_matching/targets'),
      num_targets=num_targets, per_target=per_target,
      target_class=target_class, adversarial_label=adversarial_label)
  recipe = surrogate_recipe(steps=surrogate_steps,
                            batch_size=surrogate_batch_size,
                            learning_rate=surrogate_learning_rate,
                            weight_decay=surrogate_weight_decay)
  model_kwargs = dict(model_kwargs) if model_kwargs is not None else {
      'width': 16}
  surrogate, variables = train_surrogate(
      train, seed=seed, purpose='gradient_matching/surrogate',
      model_name=model, model_kwargs=model_kwargs, recipe=recipe,
      variables=surrogate_variables)
  bounds = data_range(train, clip_to_data_range)
  max_shift = 0
  if augment:
    max_shift = augment_shift or default_max_shift(train.image_shape[0])
  config = CraftingConfig(
      epsilon=float(epsilon), bounds=bounds, steps=int(crafting_steps),
      learning_rate_fraction=float(crafting_learning_rate_fraction),
      max_shift=int(max_shift), flip=bool(augment and augment_flip))
  craft_seed = int(host_rng(seed, 'gradient_matching/craft').integers(
      0, 2**31 - 1))
  result = craft_perturbations(
      surrogate, variables, train.images[poison_rows_TP], adversarial,
      test.images[target_rows], key=jax.random.key(craft_seed), config=config,
      restarts=restarts)

  rows = poison_rows_TP.reshape(-1)
  order = np.argsort(rows)
  rows = rows[order]
  poison_targets = np.repeat(np.arange(num_targets), per_target)[order]
  base = train.images[rows].copy()
  images = train.images.copy()
  images[rows] = np.clip(
      base + result.perturbations.reshape(-1, *base.shape[1:])[order],
      *bounds)
  # Stored exactly as applied in float32: x_poison − x_base == Δ.
  perturbations = images[rows] - base
  target_predictions = training.predict(surrogate, variables,
                                        test.images[target_rows])
  unaffected_rows = np.setdiff1d(np.arange(len(test)), target_rows)
  return TargetedPoisoning(
      train=train.replace(images=images), manipulated=rows,
      manipulated_clean_labels=train.labels[rows].copy(),
      affected=test.subset(target_rows),
      unaffected=test.subset(unaffected_rows),
      info={'num_poisons': int(rows.size), 'poisons_per_target': per_target,
            'num_targets': num_targets, 'epsilon': float(epsilon),
            'restarts': int(restarts), 'crafting_steps': int(crafting_steps),
            'crafting_learning_rate_fraction':
                float(crafting_learning_rate_fraction),
            'augment_shift': int(max_shift), 'augment_flip': config.flip,
            'data_range': list(bounds),
            'target_test_rows': target_rows.tolist(),
            'target_labels': test.labels[target_rows].tolist(),
            'adversarial_labels': adversarial.tolist(),
            'matching_loss': result.best_loss.tolist(),
            'surrogate_target_success': float(np.mean(
                target_predictions == adversarial)),
            'surrogate': {'model': model, 'model_kwargs': model_kwargs,
                          'recipe': dataclasses.asdict(recipe)}},
      target_images=test.images[target_rows].copy(),
      target_labels=test.labels[target_rows].copy(),
      adversarial_labels=adversarial, perturbations=perturbations,
      base_images=base, poison_targets=poison_targets)


def target_success(model: nn.Module, variables: training.Variables,
                   manipulation: TargetedPoisoning) -> float:
  """Share of the targets `model` predicts as their adversarial label
  (Pawelczyk §4: the poison's success rate on the victim)."""
  predictions = training.predict(model, variables, manipulation.target_images)
  return float(np.mean(predictions == manipulation.adversarial_labels))
