"""Projected-Gradient Unlearning, PGU (Hoang et al. 2024, §3; SPEC.md, Methods).

Gradient steps on the forget samples only, each projected out of the core
gradient space (CGS) of the retained data, layer by layer. Where the paper
and the authors' code (hnanhtuan/projected_gradient_unlearning @ b3275c3)
differ we follow the code, each script for its own use, and keep the
paper's form as an option; `tests/test_equiv_pgu.py` checks every step
against the code's outputs (`tests/fixtures/reference/pgu.npz`).

1. Cache (once per original model, `task.cached('pgu/rrt/<stride>', None,
   …)`) the matrix R Rᵀ of every conv/dense layer's input representations
   over the training set (§3.2.2, eq. 2; `representations.layer_covariances`).
   Conv patches are taken at every stride-1 position, as the code's
   `compute_svd` unfolds every conv (`F.unfold(..., stride=1)`) whatever its
   stride (`conv_patch_stride='unit'`); 'layer' takes only the positions the
   layer convolves (`representations` docstring).
2. On a request subtract the forget rows' R_f R_fᵀ (eq. 3) and take the CGS
   M: the top-k eigenvectors of R_r R_rᵀ (`energy_threshold` γ; singular
   values σ of R summed, not squared, as the code). k follows
   `core_dimension_rule` (`representations.CORE_DIMENSION_RULES`, with C_k
   the cumulative share of σ): the paper's "Σ_{i≤k} σ_i ≥ γ·Σ σ_i" is
   `first_reaching`, which none of the scripts computes; the defaults are
   each script's: forgetting `count_at_most` (`unlearn.py`, #{k: C_k ≤ γ},
   one vector fewer than the paper), de-poisoning `count_below`
   (`depoisoning.py`, < γ). `unlearn_class.py` (a whole class) uses
   `count_at_most_plus_one`; set it for class removal.
3. Minimise on S_f, with the labels as given (eq. 1):

     L = mean_i [ −log(1 − p_{i,y_i} + ε) − λ·H_i ]

   λ > 0 (`mode='forget'`) raises the output entropy; λ < 0
   (`mode='depoison'`) lowers it, so the poisoned samples settle on another
   class (§3.2.1). The sign: eq. 1 as printed reads "− λ p log p" (= +λH),
   which with λ > 0 would *lower* the entropy, contradicting its own text
   ("maximize (λ > 0) the entropy") and the authors' code (`unlearn.py`:
   loss2 = −H, weight +0.2). We follow the text and the code. The code also
   takes the batch mean (the paper writes a sum; only the step size differs)
   and calls ε `offset` (0.05 for forgetting, 0.1 for de-poisoning).
   H_i is the entropy over `entropy_classes`:
   - 'all': H(p_i) = −Σ_c p_c log p_c over every class (eq. 1; `unlearn.py`
     for forgetting, the default there);
   - 'non_label': the entropy of the softmax of sample i's logits with the
     given label's logit removed (`depoisoning.py`:195-210, the default when
     de-poisoning). Minimising it puts the mass that is not on the given
     (poisoned) label on one other class: §3.2.1's stated aim, "assign a
     high confidence score to a class other than the poisoned labels",
     whereas over all classes a still-confident poisoned label would count
     as low entropy too. The paper's eq. 1 uses all classes for both modes;
     we follow the code, and keep 'all' as the option.
   The code's +1e-15 / +1e-10 inside the logs are left out: log-softmax is
   exact and finite (the difference is below float32 rounding here).
4. SGD without momentum or weight decay, learning rate decayed exponentially
   per epoch from `learning_rate` to `final_learning_rate` over `max_epochs`
   (§4.1: 0.05 → 0.01 over 100 epochs; the de-poisoning configs 0.1 → 0.05);
   every conv/dense kernel's gradient is projected, g ← g − M Mᵀ g (eq. 4,
   `projected_sgd_update`); biases and BatchNorm parameters are not updated
   (§4.1); the model runs in evaluation mode (the code freezes BatchNorm
   statistics).
   A quirk of `unlearn.py` not reproduced: it maps a parameter name to its
   projection's key with `name.replace(f'.{i}', f'[{i}]')` for i = 0 … 19,
   which mangles module indices of 10 or more (`features.10.0` becomes
   `features[1]0[0]`); such a layer finds no projection, its gradient is
   zeroed and it is never updated. §4.1 updates every conv and linear
   weight, so every captured layer here is projected and updated.
5. De-poisoning (§3.2.3): the last layer uses TRGP (Lin et al. 2022) with the
   retain CGS as trust region: its effective kernel is K + M (Q − I) Mᵀ K
   with a learned k×k scale Q (identity at the start, step × 0.1 as the
   code's `scale` parameters), while K's own gradient is projected as above.
   Q is folded into K on return. (`depoisoning.py` takes the CGS of the clean
   rows directly, `compute_svd` over them; here it is R Rᵀ − R_f R_fᵀ, the
   same matrix up to rounding.)
6. Early stopping (§3.2.3) once per epoch, the original model included:
   `forget` — stop once the accuracy on S_f (given labels) falls to the
   target and keep the evaluation whose gap |target − forget| is smallest
   (the code's rule); the target is the validation accuracy
   (`forget_target='validation'`, random samples) or chance, 1/C
   (`'chance'`, a whole class: "or to the random performance"); `depoison`
   — keep the best validation accuracy. Both stop after `patience`
   evaluations without improvement, and at the step budget
   (`budget_fraction` of the original recipe's steps, if set) or after
   `max_epochs`.

Incremental requests (§3.2.4, §4.4): `start_incremental` + `unlearn_request`
keep the retain cache and the current model; each request subtracts the new
forget rows' R_f R_fᵀ, computed with the current model (eq. 5: the retained
representations are approximately unchanged by the projected steps).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from unlearnjax import parallel
from unlearnjax import representations as reps
from unlearnjax import training
from unlearnjax.data.split import Split
from unlearnjax.training import Variables
from unlearnjax.unlearn import budgeted
from unlearnjax.unlearn.base import Method, UnlearnTask, Unlearned, single

MODES = ('forget', 'depoison')
FORGET_TARGETS = ('validation', 'chance')
# Which classes eq. 1's entropy runs over (module docstring, step 3).
ENTROPY_CLASSES = ('all', 'non_label')
# §4.1 and the authors' configs (unlearned/…/exp1, poison/…): λ, ε, rates;
# the entropy's classes and the CGS cut of each mode's script (`unlearn.py`,
# `depoisoning.py`).
_MODE_DEFAULTS = {
    'forget': dict(entropy_weight=0.2, epsilon=0.05, learning_rate=0.05,
                   final_learning_rate=0.01, entropy_classes='all',
                   core_dimension_rule='count_at_most'),
    'depoison': dict(entropy_weight=-0.2, epsilon=0.1, learning_rate=0.1,
                     final_learning_rate=0.05, entropy_classes='non_label',
                     core_dimension_rule='count_below'),
}


@dataclasses.dataclass(frozen=True)
class PGUHparams:
  """PGU §4.1 defaults; the None fields take the `mode`'s default
  (`_MODE_DEFAULTS`: λ = ±0.2, ε = 0.05 / 0.1, rate 0.05 → 0.01 / 0.1 → 0.05,
  entropy over 'all' / 'non_label' classes, CGS cut 'count_at_most' /
  'count_below': the authors' `unlearn.py` / `depoisoning.py`).

  Attributes:
    mode: 'forget' (λ > 0) or 'depoison' (λ < 0, TRGP on the last layer).
    entropy_weight: λ of eq. 1, signed.
    energy_threshold: γ, the share of Σσ the CGS keeps (SmallVGG 0.95,
      AllCNN / ResNet-18 0.9).
    epsilon: ε of eq. 1.
    learning_rate, final_learning_rate: exponential decay over max_epochs.
    batch_size: forget samples per step (the code: 128).
    max_epochs: passes over S_f (the code: 100).
    budget_fraction: if set, at most max(1, round(budget_fraction ·
      recipe.steps)) steps (the study's shared step budget).
    patience: evaluations (one per epoch) without improvement before
      stopping; when forgetting, counted from the first epoch whose accuracy
      on S_f is below the original's (before it, the saturated softmax on
      S_f leaves every prediction unchanged for a while).
    trgp_learning_rate_scale: Q's rate relative to the kernels' (code: 0.1).
    forget_target: what the forget accuracy is brought to in 'forget' mode:
      'validation' (the validation accuracy) or 'chance' (1/C: removing a
      whole class, §3.2.3).
    covariance_chunk_size: images per jitted call when computing R Rᵀ.
    entropy_classes: eq. 1's entropy over 'all' classes (the paper; the
      code's `unlearn.py`) or the 'non_label' ones, the given label's logit
      removed (the code's `depoisoning.py`). None: the mode's.
    core_dimension_rule: how k is cut from the cumulative σ share
      (`representations.CORE_DIMENSION_RULES`): 'count_at_most'
      (`unlearn.py`), 'count_below' (`depoisoning.py`),
      'count_at_most_plus_one' (`unlearn_class.py`, whole classes) or
      'first_reaching' (§3.2.2 as printed). None: the mode's script's.
    conv_patch_stride: 'unit' (conv patches at every stride-1 position, the
      code's `compute_svd`) or 'layer' (the layer's strides).
  """
  mode: str = 'forget'
  entropy_weight: float | None = None
  energy_threshold: float = 0.95
  epsilon: float | None = None
  learning_rate: float | None = None
  final_learning_rate: float | None = None
  batch_size: int = 128
  max_epochs: int = 100
  budget_fraction: float | None = None
  patience: int = 10
  trgp_learning_rate_scale: float = 0.1
  covariance_chunk_size: int = 128
  forget_target: str = 'validation'
  entropy_classes: str | None = None
  core_dimension_rule: str | None = None
  conv_patch_stride: str = reps.DEFAULT_PATCH_STRIDE

  def validate(self) -> None:
    """Raises ValueError for a bad field (`checks.check_config` calls it
    before a sweep starts)."""
    self.resolved()

  def resolved(self) -> 'PGUHparams':
    """A copy with the mode's defaults filled in, checked."""
    if self.mode not in MODES:
      raise ValueError(f"PGU mode must be one of {MODES}, got {self.mode!r}")
    if self.forget_target not in FORGET_TARGETS:
      raise ValueError(f'forget_target must be one of {FORGET_TARGETS}, got '
                       f'{self.forget_target!r}')
    filled = dataclasses.replace(self, **{
        k: v for k, v in _MODE_DEFAULTS[self.mode].items()
        if getattr(self, k) is None})
    if filled.entropy_classes not in ENTROPY_CLASSES:
      raise ValueError(f'entropy_classes must be one of {ENTROPY_CLASSES} '
                       "(eq. 1's entropy over every class, or without the "
                       f'given label), got {filled.entropy_classes!r}')
    reps.check_core_dimension_rule(filled.core_dimension_rule)
    reps.check_patch_stride(filled.conv_patch_stride)
    if not 0.0 <= filled.energy_threshold <= 1.0:
      raise ValueError('energy_threshold (γ) must be in [0, 1], got '
                       f'{filled.energy_threshold}')
    if filled.epsilon <= 0.0:
      raise ValueError(f'epsilon must be > 0 (eq. 1), got {filled.epsilon}')
    if filled.learning_rate <= 0.0 or filled.final_learning_rate <= 0.0:
      raise ValueError('learning rates must be > 0')
    for name in ('batch_size', 'max_epochs', 'patience'):
      if getattr(filled, name) < 1:
        raise ValueError(f'{name} must be >= 1, got {getattr(filled, name)}')
    if filled.budget_fraction is not None and filled.budget_fraction <= 0.0:
      raise ValueError('budget_fraction must be > 0 or None')
    return filled


@dataclasses.dataclass(frozen=True)
class PGUDepoisonHparams(PGUHparams):
  """PGU for de-poisoning (§3.2.1, §3.2.3, §4.5): λ < 0 and TRGP."""
  mode: str = 'depoison'


def reverse_cross_entropy(logits: jax.Array, labels: jax.Array, epsilon
                          ) -> jax.Array:
  """Per sample −log(1 − p_y + ε): eq. 1's first term (the code's `loss1`,
  −log(1 − (p_y − offset)), ε its `offset`)."""
  p = jax.nn.softmax(logits.astype(jnp.float32))
  p_label = jnp.take_along_axis(p, labels[:, None], axis=-1)[:, 0]
  return -jnp.log(1.0 - p_label + epsilon)


def output_entropy(logits: jax.Array, labels: jax.Array,
                   entropy_classes: str = 'all') -> jax.Array:
  """Per-sample entropy of eq. 1's second term over `entropy_classes`:
  'all' — H(softmax(logits)) (`unlearn.py`'s −loss2); 'non_label' —
  H(softmax(logits with the label's logit removed)) (`depoisoning.py`'s
  loss2). `labels` are unused for 'all'."""
  logits = logits.astype(jnp.float32)
  if entropy_classes == 'all':
    log_p = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)
  if entropy_classes != 'non_label':
    raise ValueError(f'entropy_classes must be one of {ENTROPY_CLASSES}, got '
                     f'{entropy_classes!r}')
  if logits.shape[-1] < 2:
    raise ValueError('the non-label entropy needs at least 2 classes')
  is_label = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.bool_)
  # The label's logit at −inf is the code's removal; its log-probability is
  # then set to 0 so that neither the value nor the gradient sees −inf·0.
  log_q = jax.nn.log_softmax(jnp.where(is_label, -jnp.inf, logits))
  log_q = jnp.where(is_label, 0.0, log_q)
  return -jnp.sum(jnp.exp(log_q) * log_q, axis=-1)


def example_losses(logits: jax.Array, labels: jax.Array, entropy_weight,
                   epsilon, entropy_classes: str = 'all') -> jax.Array:
  """Per-sample eq. 1 (sign as the text and code): −log(1 − p_y + ε) − λ·H,
  H over `entropy_classes` (`output_entropy`). The code's loss is
  loss1_w·loss1 + loss2_w·loss2 with loss1_w = 1: λ = loss2_w for
  forgetting (loss2 = −H), λ = −loss2_w for de-poisoning (loss2 = +H)."""
  return (reverse_cross_entropy(logits, labels, epsilon)
          - entropy_weight * output_entropy(logits, labels, entropy_classes))


def trgp_kernel(kernel: jax.Array, basis: jax.Array, scale: jax.Array
                ) -> jax.Array:
  """TRGP's scaled kernel K + M (Q − I) Mᵀ K (Lin et al. 2022; the PGU code's
  `Linear.forward`), K flattened to (d, out)."""
  d = basis.shape[0]
  flat = kernel.reshape(d, -1)
  inside = jnp.matmul(basis.T, flat, precision=jax.lax.Precision.HIGHEST)
  delta = scale - jnp.eye(scale.shape[0], dtype=scale.dtype)
  flat = flat + basis @ (delta @ inside)
  return flat.reshape(kernel.shape)


def with_trgp(params, trgp_layer: str | None, basis, scale):
  """params with the TRGP layer's kernel replaced by its scaled kernel."""
  if trgp_layer is None:
    return params
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep='/')
  key = reps.kernel_key(trgp_layer)
  flat = {**flat, key: trgp_kernel(flat[key], basis, scale)}
  return flax.traverse_util.unflatten_dict(flat, sep='/')


def batch_loss(params, trgp_scale, batch: dict, constants: dict, *,
               model: nn.Module, trgp_layer: str | None,
               entropy_classes: str = 'all') -> jax.Array:
  """Eq. 1 averaged over the real rows of a padded batch, the model in
  evaluation mode (the code's `freeze_norm_stats`), the TRGP layer's kernel
  scaled by `trgp_scale` (None unless de-poisoning). Pure.

  batch: {'image', 'label', 'mask'} (mask 0 on padding rows).
  constants: {'batch_stats', 'bases', 'entropy_weight', 'epsilon', …}.
  """
  keep = batch['mask'] > 0
  trgp_basis = None if trgp_layer is None else constants['bases'][trgp_layer]
  effective = with_trgp(params, trgp_layer, trgp_basis, trgp_scale)
  logits = model.apply({'params': effective,
                        'batch_stats': constants['batch_stats']},
                       batch['image'], train=False)
  losses = example_losses(logits, batch['label'], constants['entropy_weight'],
                          constants['epsilon'], entropy_classes)
  # where, not a product: a padded row must not reach the mean.
  return (jnp.sum(jnp.where(keep, losses, 0.0))
          / jnp.maximum(jnp.sum(keep), 1))


def projected_sgd_update(params, grads, bases: reps.Bases, learning_rate):
  """θ ← θ − η·(g − M Mᵀ g) on every captured layer's kernel (eq. 4); every
  other leaf (biases, BatchNorm) keeps its value (§4.1). The code's update
  blocks (`unlearn.py`:246-267, `depoisoning.py`:217-240) with its wd = 0.
  Pure."""
  update = reps.project(grads, bases)
  return jax.tree.map(lambda p, u: p - learning_rate * u, params, update)


def pgu_step(state: dict, batch: dict, constants: dict, *, model: nn.Module,
             trgp_layer: str | None, entropy_classes: str = 'all'):
  """One projected SGD step on eq. 1 over a padded forget batch. Pure.

  state: {'params', 'trgp_scale'} (the scale None unless de-poisoning).
  batch: {'image', 'label', 'mask'} (mask 0 on padding rows).
  constants: {'batch_stats', 'bases' ({layer: (d, d) zero-padded M}),
    'learning_rate', 'entropy_weight', 'epsilon', 'trgp_learning_rate_scale'}.
  """
  loss_fn = functools.partial(batch_loss, batch=batch, constants=constants,
                              model=model, trgp_layer=trgp_layer,
                              entropy_classes=entropy_classes)
  loss, (grads, scale_grad) = jax.value_and_grad(loss_fn, argnums=(0, 1))(
      state['params'], state['trgp_scale'])
  rate = constants['learning_rate']
  params = projected_sgd_update(state['params'], grads, constants['bases'],
                                rate)
  scale = state['trgp_scale']
  if scale is not None:
    scale = scale - rate * constants['trgp_learning_rate_scale'] * scale_grad
  return {'params': params, 'trgp_scale': scale}, {'loss': loss}


@functools.lru_cache(maxsize=32)
def jitted_pgu_step(model: nn.Module, trgp_layer: str | None,
                    entropy_classes: str = 'all') -> Callable:
  return jax.jit(functools.partial(pgu_step, model=model,
                                   trgp_layer=trgp_layer,
                                   entropy_classes=entropy_classes),
                 donate_argnums=0)


@functools.lru_cache(maxsize=32)
def _jitted_fold(trgp_layer: str) -> Callable:
  return jax.jit(functools.partial(with_trgp, trgp_layer=trgp_layer))


Spectra = dict  # {layer: (σ descending, U)} of the retained R_r R_rᵀ


def spectra(retain_rrt: reps.Covariances) -> Spectra:
  return {name: reps.singular_values(rrt) for name, rrt in retain_rrt.items()}


def padded_bases(layer_spectra: Spectra, energy_threshold: float,
                 rule: str = reps.DEFAULT_CORE_DIMENSION_RULE
                 ) -> tuple[dict, dict]:
  """({layer: (d, d) float32 M with zero columns past k}, {layer: k}), k by
  `rule` (`representations.core_dimension`); one shape for every γ and
  request, so the step compiles once per model."""
  bases, dims = {}, {}
  for name, (sigma, vectors) in layer_spectra.items():
    k = reps.core_dimension(sigma, energy_threshold, rule)
    padded = np.zeros_like(vectors, np.float32)
    padded[:, :k] = vectors[:, :k]
    bases[name], dims[name] = padded, k
  return bases, dims


_global_norm = jax.jit(optax.global_norm)


def _check_finite(loss: float, parameter_norm: float, step: int) -> None:
  if not (math.isfinite(loss) and math.isfinite(parameter_norm)):
    raise FloatingPointError(
        f'pgu: loss {loss}, parameter norm {parameter_norm} at step {step}. '
        'The unlearning diverged; lower learning_rate (and '
        'final_learning_rate) or raise epsilon.')


def _forget_batches(n: int, batch_size: int, padded: int,
                    rng: np.random.Generator):
  """One epoch: shuffled rows in batches of `batch_size`, with masks."""
  order = rng.permutation(n)
  for start in range(0, n, batch_size):
    take = order[start:start + batch_size]
    mask = np.zeros(padded, np.float32)
    mask[:take.size] = 1.0
    yield np.concatenate([take, np.zeros(padded - take.size, take.dtype)]), mask


def run_request(model: nn.Module, variables: Variables, layer_spectra: Spectra,
                forget: Split, validation: Split, hparams: PGUHparams,
                key: jax.Array, *, max_steps: int | None = None,
                curve=None) -> Unlearned:
  """PGU on one removal request from `variables`, given the retained data's
  spectra (steps 2-6 of the module docstring). Returns the kept evaluation's
  variables (TRGP folded in) and what the run measured. `curve`
  (`curves.Curve`) gets the evaluation PGU makes after every epoch (its
  own, so its `every` is the epoch)."""
  hparams = hparams.resolved()
  if len(forget) == 0:
    raise ValueError('PGU needs at least one forget sample.')
  start = time.perf_counter()
  bases, core_dims = padded_bases(layer_spectra, hparams.energy_threshold,
                                  hparams.core_dimension_rule)
  trgp_layer = list(layer_spectra)[-1] if hparams.mode == 'depoison' else None
  params = jax.device_get(variables['params'])
  batch_stats = jax.device_get(variables.get('batch_stats', {}))
  scale = None
  if trgp_layer is not None:
    scale = np.eye(bases[trgp_layer].shape[0], dtype=np.float32)
  state = parallel.replicate({'params': params, 'trgp_scale': scale})
  constants = parallel.replicate({
      'batch_stats': batch_stats, 'bases': bases,
      'entropy_weight': np.float32(hparams.entropy_weight),
      'epsilon': np.float32(hparams.epsilon),
      'trgp_learning_rate_scale': np.float32(hparams.trgp_learning_rate_scale)})
  step_fn = jitted_pgu_step(model, trgp_layer, hparams.entropy_classes)

  def current_variables(state) -> Variables:
    params = state['params']
    if trgp_layer is not None:
      params = _jitted_fold(trgp_layer)(params, basis=constants['bases'][
          trgp_layer], scale=state['trgp_scale'])
    return {'params': jax.device_get(params), 'batch_stats': batch_stats}

  chance = 1.0 / forget.num_classes

  def target(val: float) -> float:
    return val if hparams.forget_target == 'validation' else chance

  def evaluate(variables) -> tuple[float, float, float]:
    val = training.accuracy(model, variables, validation)
    fgt = training.accuracy(model, variables, forget)
    score = -abs(target(val) - fgt) if hparams.mode == 'forget' else val
    return val, fgt, score

  n = len(forget)
  padded = parallel.round_up_to_devices(
      parallel.shape_bucket(n, hparams.batch_size))
  batch_size = min(hparams.batch_size, padded)
  steps_per_epoch = math.ceil(n / batch_size)
  step_budget = hparams.max_epochs * steps_per_epoch
  if max_steps is not None:
    step_budget = min(step_budget, max_steps)
  decay = (hparams.final_learning_rate / hparams.learning_rate) ** (
      1.0 / hparams.max_epochs)
  rng = budgeted.key_rng(key)

  kept = dict(variables=jax.device_get(dict(variables)))
  val0, fgt0, best_score = evaluate(kept['variables'])
  kept.update(epoch=0, validation=val0, forget=fgt0)
  if curve is not None:
    curve.write(0, {'forget/accuracy': fgt0, 'validation/accuracy': val0})
  history = [(val0, fgt0, math.nan)]  # (validation, forget acc., loss)
  steps, epoch, since_best, reason = 0, 0, 0, 'max_epochs'
  if hparams.mode == 'forget' and fgt0 <= target(val0):
    reason = 'forget_at_target'
  while reason == 'max_epochs' and epoch < hparams.max_epochs:
    if steps >= step_budget:
      reason = 'step_budget'
      break
    rate = np.float32(hparams.learning_rate * decay ** epoch)
    constants['learning_rate'] = parallel.replicate(rate)
    loss = None
    for take, mask in _forget_batches(n, batch_size, padded, rng):
      if steps >= step_budget:
        break
      batch = parallel.shard_batch({'image': forget.images[take],
                                    'label': forget.labels[take],
                                    'mask': mask})
      state, metrics = step_fn(state, batch, constants)
      loss, steps = metrics['loss'], steps + 1
    epoch += 1
    _check_finite(float(loss), float(_global_norm(state['params'])), steps)
    current = current_variables(state)
    val, fgt, score = evaluate(current)
    history.append((val, fgt, float(loss)))
    if curve is not None:
      curve.write(steps, {'train/loss': float(loss), 'forget/accuracy': fgt,
                          'validation/accuracy': val})
    if score > best_score:
      best_score, since_best = score, 0
      kept = dict(variables=current, epoch=epoch, validation=val, forget=fgt)
    elif hparams.mode == 'depoison' or fgt < fgt0:
      # Forgetting: the first epochs leave every prediction as it was (the
      # softmax is saturated on S_f), so patience counts from the first drop.
      since_best += 1
    if hparams.mode == 'forget' and fgt <= target(val):
      reason = 'forget_at_target'
    elif since_best >= hparams.patience:
      reason = 'patience'
  if reason == 'max_epochs' and steps >= step_budget and (
      epoch < hparams.max_epochs):
    reason = 'step_budget'

  dims = {name: int(sigma.size) for name, (sigma, _) in layer_spectra.items()}
  info = {
      'pgu_mode': hparams.mode,
      'pgu_forget_target': hparams.forget_target,
      # Every setting as used (the mode's defaults filled in).
      'pgu_hparams_used': dataclasses.asdict(hparams),
      'pgu_steps': steps, 'pgu_epochs': epoch, 'pgu_kept_epoch': kept['epoch'],
      'pgu_stop_reason': reason,
      'pgu_core_dims': core_dims, 'pgu_input_dims': dims,
      'pgu_core_share': sum(core_dims.values()) / max(1, sum(dims.values())),
      'pgu_trgp_layer': trgp_layer,
      'pgu_validation_accuracy': kept['validation'],
      'pgu_forget_accuracy': kept['forget'],
      'pgu_original_validation_accuracy': val0,
      'pgu_original_forget_accuracy': fgt0,
      'pgu_history': history,
      'pgu_seconds': time.perf_counter() - start,
  }
  return Unlearned(kept['variables'], info)


def _timed(fn: Callable[[], object]) -> Callable[[], tuple[object, float]]:
  def run():
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start
  return run


def unlearn(task: UnlearnTask, hparams: PGUHparams, key: jax.Array
            ) -> Unlearned:
  """PGU on `task.forget` (module docstring). R Rᵀ over the training set is
  computed once per original model and shared by every task on it."""
  hparams = hparams.resolved()
  chunk, stride = hparams.covariance_chunk_size, hparams.conv_patch_stride
  train_rrt, train_seconds = task.cached(f'pgu/rrt/{stride}', None, _timed(
      lambda: reps.layer_covariances(task.model, task.original,
                                     task.train.images, chunk, stride)))

  def retain_spectra():
    removed = reps.layer_covariances(task.model, task.original,
                                     task.forget_split.images, chunk, stride)
    return spectra(reps.remove(train_rrt, removed))

  layer_spectra, spectra_seconds = task.cached(
      f'pgu/spectra/{stride}', task.forget, _timed(retain_spectra))
  max_steps = None
  if hparams.budget_fraction is not None:
    max_steps = task.recipe.scaled(hparams.budget_fraction).steps
  out = run_request(task.model, task.original, layer_spectra,
                    task.forget_split, task.validation, hparams, key,
                    max_steps=max_steps, curve=task.curve)
  return Unlearned(out.variables, {
      **out.info, 'pgu_train_cache_seconds': train_seconds,
      'pgu_retain_spectra_seconds': spectra_seconds})


@dataclasses.dataclass(frozen=True)
class IncrementalState:
  """A model and its retain cache between removal requests (PGU §3.2.4).

  Attributes:
    variables: the current (already unlearned) model.
    retain_rrt: R Rᵀ of every layer over the data not yet removed.
    requests: how many requests have been served.
    conv_patch_stride: how the cache's conv patches were taken; every
      request must use the same (`PGUHparams.conv_patch_stride`).
  """
  variables: Variables
  retain_rrt: reps.Covariances
  requests: int = 0
  conv_patch_stride: str = reps.DEFAULT_PATCH_STRIDE


def start_incremental(model: nn.Module, variables: Variables,
                      train_images: np.ndarray, chunk_size: int = 128,
                      conv_patch_stride: str = reps.DEFAULT_PATCH_STRIDE
                      ) -> IncrementalState:
  """The state before the first request: R Rᵀ over the full training set."""
  return IncrementalState(
      jax.device_get(variables),
      reps.layer_covariances(model, variables, train_images, chunk_size,
                             conv_patch_stride),
      conv_patch_stride=conv_patch_stride)


def unlearn_request(model: nn.Module, state: IncrementalState, forget: Split,
                    validation: Split, hparams: PGUHparams, key: jax.Array, *,
                    max_steps: int | None = None
                    ) -> tuple[IncrementalState, Unlearned]:
  """Serves one removal request (§4.4: 1K samples at a time): subtracts
  R_f R_fᵀ of `forget` under the current model, runs PGU from the current
  model, and returns the next state with the result."""
  hparams = hparams.resolved()
  if hparams.conv_patch_stride != state.conv_patch_stride:
    raise ValueError(
        f'unlearn_request: hparams.conv_patch_stride = '
        f'{hparams.conv_patch_stride!r} but the cache was built with '
        f'{state.conv_patch_stride!r}; pass the same to start_incremental.')
  removed = reps.layer_covariances(model, state.variables, forget.images,
                                   hparams.covariance_chunk_size,
                                   hparams.conv_patch_stride)
  retain_rrt = reps.remove(state.retain_rrt, removed)
  out = run_request(model, state.variables, spectra(retain_rrt), forget,
                    validation, hparams, key, max_steps=max_steps)
  return dataclasses.replace(state, variables=out.variables,
                             retain_rrt=retain_rrt,
                             requests=state.requests + 1), out


METHOD = Method('pgu', unlearn, PGUHparams, single(PGUHparams))
DEPOISON_METHOD = Method('pgu_depoison', unlearn, PGUDepoisonHparams,
                         single(PGUDepoisonHparams))
