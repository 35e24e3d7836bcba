r"""Why unlearning fails to remove poisons (Pawelczyk et al. 2024, §6, App. C).

Two convex experiments whose objectives have unique minimisers, so "the model
after exact unlearning" θ(S') is computable and model shifts are well defined:

* Hypothesis 1, model shift (§6, Fig. 4; App. C.1). A multinomial logistic
  regression on fixed features (the paper: the last layer of a fixed
  ResNet-18 on CIFAR-10; here: the penultimate activations, i.e. the input of
  the final Dense, of a `small_cnn` trained on the clean embedded digits). For
  a share β of the poisons, ‖θ(S_corr) − θ(S_corr \ S_poison^(β))‖ (ℓ1, the
  Fig. 4 caption, and ℓ2, the §6 text) against removing the same number of
  random clean samples, ‖θ(S_corr) − θ(S_corr \ S_rand^(β))‖. The paper's
  poisons (Gradient Canceling, Witch's Brew) are not in this library; this
  study uses the library's BadNet and interclass-confusion (label-flip)
  poisons pushed through the fixed feature extractor, and the paper's
  Gaussian poisons (§4.3) added in feature space (see `poisoned_features`).
* Hypothesis 2, gradient alignment (§6, Fig. 5; App. C.2). The synthetic
  linear-regression task of App. C.2 (N samples in R^d whose first k
  coordinates are N(0, 1) and the rest N(0, 10^-4); labels from w1 for the
  first half and w2 for the second), indiscriminate poisons from Gradient
  Canceling (App. A.1.3, Alg. 2) towards a GradPC target θ_low, and gradient
  descent on the clean data from θ(S_corr): the cosine between every clean
  mini-batch gradient g_t and the desired shift v = θ(S_corr) −
  θ(S_corr \ S_poison), against the same for a random clean forget set whose
  removal shifts the model by the same ℓ1 norm (App. C.2, last paragraph).

Every solver is a pure jitted JAX function of explicit inputs and PRNG keys,
run in float64 (`jax.enable_x64`) so the optima are resolved far below the
shifts being measured. `run` appends one row per finished unit ((poison, seed,
β) for Fig. 4; (seed, forget set) for Fig. 5) to `<workdir>/results.jsonl`
and skips finished ones on rerun; `write_report` draws the figures from the
rows alone.
"""

from __future__ import annotations

import collections
import functools
import math
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import optax.tree_utils as otu
import tqdm

from unlearnjax import data, models, training
from unlearnjax.errors import ConfigError
from unlearnjax.manipulations import badnet, interclass
from unlearnjax.manipulations.base import host_rng
from unlearnjax.results import ResultsFile, run_key
from unlearnjax.sweep import seed_key, trained_model

STUDY = 'why_fails'
POISONS = ('badnet', 'ic', 'gaussian')
PARTS = ('model_shift', 'gradient_alignment')


# --------------------------------------------------------------------------
# Hypothesis 1 (§6, Fig. 4; App. C.1): logistic regression on fixed features.
# --------------------------------------------------------------------------


def logistic_objective(params, features, labels, weights, l2: float,
                       n_ref: float):
  """(1/n_ref) Σ_i w_i CE(W^T x_i + b, y_i) + (l2/2) ‖W‖² (App. C.1's model).

  `weights` (0/1) select the training subset with fixed shapes, so every
  subset S' ⊂ S_corr is one jit compilation; `n_ref` = |S_corr| stays fixed
  across subsets, so removing samples changes the data term only (the same
  per-sample regularisation as scikit-learn's C = 1 / (l2 · n_ref)). The bias
  is not penalised, as in scikit-learn.
  """
  logits = features @ params['w'] + params['b']
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return (jnp.sum(weights * ce) / n_ref
          + 0.5 * l2 * jnp.sum(jnp.square(params['w'])))


@functools.partial(jax.jit,
                   static_argnames=('num_classes', 'max_iter', 'memory_size'))
def fit_logistic(features, labels, weights, l2, n_ref, tol, *,
                 num_classes: int, max_iter: int = 1000, memory_size: int = 10):
  """The unique optimum of `logistic_objective` by L-BFGS (optax.lbfgs with
  its zoom line search), iterated until ‖∇f‖₂ < `tol` or `max_iter`.

  Strictly convex in W (l2 > 0); the unpenalised bias is unique up to a
  constant shared by all classes (softmax invariance), which the solver never
  moves (∑_c ∂f/∂b_c = 0) from its zero start and `flat_parameters` removes.
  (Solve subsets one call each: on CPU a vmapped while-loop with a line
  search is ~7x slower than the calls in sequence.)

  Returns:
    (params {'w': (d, C), 'b': (C,)}, final gradient norm, iterations).
  """
  dim = features.shape[1]
  params = {'w': jnp.zeros((dim, num_classes), features.dtype),
            'b': jnp.zeros((num_classes,), features.dtype)}
  fun = functools.partial(logistic_objective, features=features, labels=labels,
                          weights=weights, l2=l2, n_ref=n_ref)
  solver = optax.lbfgs(memory_size=memory_size)
  value_and_grad = optax.value_and_grad_from_state(fun)

  def step(carry):
    params, state = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = solver.update(grad, state, params, value=value,
                                   grad=grad, value_fn=fun)
    return optax.apply_updates(params, updates), state

  def keep_going(carry):
    _, state = carry
    count = otu.tree_get(state, 'count')
    grad_norm = otu.tree_norm(otu.tree_get(state, 'grad'))
    return (count == 0) | ((count < max_iter) & (grad_norm >= tol))

  params, state = jax.lax.while_loop(keep_going, step,
                                     (params, solver.init(params)))
  grad_norm = otu.tree_norm(jax.grad(fun)(params))
  return params, grad_norm, otu.tree_get(state, 'count')


def flat_parameters(params) -> jax.Array:
  """θ as one vector: W and the class-centred bias (its identifiable part)."""
  b = params['b'] - jnp.mean(params['b'], axis=-1, keepdims=True)
  return jnp.concatenate([params['w'].reshape(*params['w'].shape[:-2], -1), b],
                         axis=-1)


@functools.lru_cache(maxsize=8)
def _jitted_features(model: nn.Module):
  def features(variables, images):
    captured = []

    def interceptor(next_fun, args, kwargs, context):
      if (isinstance(context.module, nn.Dense)
          and context.method_name == '__call__'):
        captured.append(args[0])
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
      model.apply(variables, images, train=False)
    return captured[-1]

  return jax.jit(features)


def penultimate_features(model: nn.Module, variables, images: np.ndarray,
                         batch_size: int = 1024) -> np.ndarray:
  """The input of the model's last Dense layer (the "last-layer features" of
  App. C.1), in evaluation mode, via `flax.linen.intercept_methods`: no
  change to the model, so the same call works for `resnet18`."""
  fn = _jitted_features(model)
  chunks = [np.asarray(fn(variables, images[i:i + batch_size]))
            for i in range(0, images.shape[0], batch_size)]
  return np.concatenate(chunks).astype(np.float64)


def poisoned_features(kind: str, *, train, test, model, variables,
                      clean_features: np.ndarray, num_poisons: int,
                      seed: int, settings: dict, transform=lambda f: f):
  """S_corr in feature space for one of this study's stand-in poisons.

  The paper's Fig. 4 uses its indiscriminate (Gradient Canceling) and
  targeted (Witch's Brew) poisons, which this library does not craft. In
  their place (all replace |S_poison| training samples, so |S_corr| = |S|,
  as in App. C.1 where removing 384 of 50000 leaves 49616):

  * 'badnet': the library's BadNet (`manipulations.badnet`): a trigger patch
    stamped on `num_poisons` random training images, relabelled to
    `target_class`; their features are the fixed extractor's features of the
    stamped images. Affected test set: every stamped test image, true label.
  * 'ic': the library's interclass confusion (`manipulations.interclass`), a
    label-flip poison: ≈`num_poisons` samples of classes A and B (half each)
    get the other class's label; features unchanged. Affected: test A and B.
  * 'gaussian': the paper's Gaussian poisons (§4.3, x + ξ, ξ ~ N(0, ε² I))
    added to the (standardised) features of `num_poisons` random training
    samples, labels kept (ε = settings['std']). No affected test set.

  Args:
    clean_features: the (standardised) features of `train`.
    transform: maps raw extractor features to the space of `clean_features`.

  Returns:
    (train features, train labels, poison rows, affected test (features,
    labels) or None).
  """
  extract = lambda images: transform(  # pylint: disable=unnecessary-lambda-assignment
      penultimate_features(model, variables, images))
  if kind == 'badnet':
    m = badnet.manipulate(train, test, seed=seed, num_poisons=num_poisons,
                          **settings)
    feats = clean_features.copy()
    feats[m.manipulated] = extract(m.train.images[m.manipulated])
  elif kind == 'ic':
    a, b = settings['class_a'], settings['class_b']
    share = num_poisons / np.sum(np.isin(train.labels, (a, b)))
    m = interclass.manipulate(train, test, seed=seed, class_a=a, class_b=b,
                              confused_share=min(1.0, float(share)))
    feats = clean_features.copy()
  elif kind == 'gaussian':
    rng = host_rng(seed, 'why_fails/gaussian')
    rows = np.sort(rng.choice(len(train), num_poisons, replace=False))
    feats = clean_features.copy()
    feats[rows] += settings['std'] * rng.standard_normal(feats[rows].shape)
    return feats, train.labels.copy(), rows, None
  else:
    raise ValueError(f'Unknown poison {kind!r}; valid: {", ".join(POISONS)}')
  affected = (extract(m.affected.images), m.affected.labels)
  return feats, m.train.labels, m.manipulated, affected


def removal_weights(n: int, poison_rows: np.ndarray, betas, seed: int):
  """0/1 weights of [S_corr, S_corr \\ S_poison^(β) for β in betas,
  S_corr \\ S_rand^(β) for β in betas]. S_poison^(β) is the first
  round(β·|S_poison|) (at least 1) of a seeded order of the poisons (nested
  in β); S_rand^(β) as many samples of a seeded order of the clean rows."""
  rng = host_rng(seed, 'why_fails/removal_order')
  poison_order = rng.permutation(poison_rows)
  clean_order = rng.permutation(np.setdiff1d(np.arange(n), poison_rows))
  counts = [max(1, round(beta * poison_rows.size)) for beta in betas]
  weights = [np.ones(n)]
  for order in (poison_order, clean_order):
    for count in counts:
      w = np.ones(n)
      w[order[:count]] = 0.0
      weights.append(w)
  return np.stack(weights), counts


# --------------------------------------------------------------------------
# Hypothesis 2 (§6, Fig. 5; App. C.2): synthetic linear regression.
# --------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=('n', 'dim', 'signal_dim'))
def make_synthetic(key, w1, w2, *, n: int, dim: int, signal_dim: int,
                   low_std: float, noise_std: float):
  """App. C.2's data: x[:k] ~ N(0, 1), x[k:] ~ N(0, low_std²) (the paper:
  k = 50 of d = 1000, variance 10^-4); y = <w1, x> + N(0, noise_std²) for the
  first half (i ≤ N/2) and <w2, x> + noise for the second (noise variance
  10^-2)."""
  kx, ky = jax.random.split(key)
  scale = jnp.where(jnp.arange(dim) < signal_dim, 1.0, low_std)
  x = jax.random.normal(kx, (n, dim)) * scale
  w = jnp.where((jnp.arange(n) < n // 2)[:, None], w1, w2)
  y = jnp.sum(x * w, axis=1) + noise_std * jax.random.normal(ky, (n,))
  return x, y


@functools.partial(jax.jit, static_argnames=('dim', 'signal_dim'))
def planted_directions(key, *, dim: int, signal_dim: int):
  """w1 ⟂ w2, unit norm, zero outside the first `signal_dim` coordinates
  (App. C.2 (a), (b))."""
  q, _ = jnp.linalg.qr(jax.random.normal(key, (signal_dim, 2)))
  pad = jnp.zeros((dim - signal_dim, 2), q.dtype)
  w = jnp.concatenate([q, pad])
  return w[:, 0], w[:, 1]


@jax.jit
def normal_equations(x, y, weights):
  """(Σ w_i x_i x_iᵀ, Σ w_i y_i x_i): the sufficient statistics of a subset."""
  xw = x * weights[:, None]
  return xw.T @ x, xw.T @ y


@jax.jit
def ridge_from_normal(gram, moment, l2, n_ref):
  """argmin_θ ½ Σ w_i (x_iᵀθ − y_i)² + ½ l2 n_ref ‖θ‖² (closed form).

  With l2 = 0 and a singular Gram matrix, the minimum-norm least-squares
  solution (an eigendecomposition pseudo-inverse, as `numpy.linalg.lstsq`
  returns); otherwise a linear solve.
  """
  a = gram + l2 * n_ref * jnp.eye(gram.shape[0], dtype=gram.dtype)

  def pinv_solve():
    evals, evecs = jnp.linalg.eigh(a)
    cutoff = 1e-10 * jnp.max(evals)
    inv = jnp.where(evals > cutoff, 1.0 / jnp.where(evals > cutoff, evals, 1.0),
                    0.0)
    return evecs @ (inv * (evecs.T @ moment))

  return jax.lax.cond(l2 > 0, lambda: jnp.linalg.solve(a, moment), pinv_solve)


def ridge_fit(x, y, weights, l2, n_ref):
  """θ(S') for the subset `weights` selects (see `ridge_from_normal`)."""
  gram, moment = normal_equations(x, y, weights)
  return ridge_from_normal(gram, moment, l2, n_ref)


@functools.partial(jax.jit, static_argnames=('steps',))
def gradpc(key, theta_clean, x_test, y_test, *, radius: float, steps: int,
           lr: float):
  """θ_low of Gradient Canceling (App. A.1.3): GradPC (Sun et al. 2020) as
  projected gradient ascent on the test loss ½ mean (xᵀθ − y)² inside the ℓ2
  ball of radius ε_w (the paper: 1) around the clean parameters, from a
  random point on its sphere (at θ_clean itself the ascent direction is 0)."""
  u = jax.random.normal(key, theta_clean.shape, theta_clean.dtype)
  theta = theta_clean + radius * u / jnp.linalg.norm(u)

  def test_loss(t):
    return 0.5 * jnp.mean(jnp.square(x_test @ t - y_test))

  def body(_, theta):
    theta = theta + lr * jax.grad(test_loss)(theta)
    delta = theta - theta_clean
    norm = jnp.linalg.norm(delta)
    return theta_clean + delta * jnp.minimum(1.0, radius / norm)

  return jax.lax.fori_loop(0, steps, body, theta)


@functools.partial(jax.jit, static_argnames=('epochs',))
def gradient_canceling(theta_low, clean_grad, x_init, y_poison, *, lr: float,
                       epochs: int):
  """Alg. 2 (App. A.1.3) for linear regression: perturb the poisons' inputs
  (labels kept) so θ_low has a vanishing gradient on the corrupted data,

    min_Δ ½ ‖ĝ_clean(θ_low) + Ê_poison[∇ℓ((x + Δ(x), y); θ_low)]‖²   (Eq. 4),

  with ĝ_clean the clean training-objective gradient (data mean plus the
  ridge term) and ε_p = ∞ (no projection), by full-batch gradient descent
  (one step per epoch) with step size η.

  Returns:
    (poison inputs, Eq. 4 loss at the start, at the end).
  """
  def loss(x):
    residual = x @ theta_low - y_poison
    return 0.5 * jnp.sum(jnp.square(
        clean_grad + x.T @ residual / x.shape[0]))

  def body(_, x):
    return x - lr * jax.grad(loss)(x)

  x = jax.lax.fori_loop(0, epochs, body, x_init)
  return x, loss(x_init), loss(x)


@functools.partial(jax.jit,
                   static_argnames=('steps', 'batch_size', 'signal_dim'))
def clean_gradient_descent(key, theta0, target, direction, x, y, l2, n_ref, *,
                           lr: float, steps: int, batch_size: int,
                           signal_dim: int):
  """Mini-batch gradient descent on the clean (retain) data (x, y) from θ0.

  The objective is the one θ(S_retain) = `target` minimises, ½ Σ_retain
  (xᵀθ − y)² / n_ref + ½ l2 ‖θ‖²; g_t is its mini-batch estimate (batches
  without replacement, reshuffled every epoch; with replacement when the
  data are fewer than a batch). Per step t, before the update
  θ_{t+1} = θ_t − lr g_t, it records

    cos_minibatch  ⟨g_t, v⟩ / (‖g_t‖ ‖v‖), v = `direction` (Fig. 5),
    cos_full       the same with the full clean gradient at θ_t,
    dist_l2/l1     ‖θ_t − target‖, the distance left to θ(S_retain),
    dist_low       its ℓ2 norm in the coordinates ≥ signal_dim (the
                   low-variance subspace of App. C.2).

  Returns:
    (θ_steps, {name: (steps,) array}).
  """
  n = x.shape[0]
  gram, moment = normal_equations(x, y, jnp.ones(n))   # full gradients, cheap
  if n >= batch_size:
    per_epoch = n // batch_size
    epochs = -(-steps // per_epoch)
    batches = jax.vmap(lambda k: jax.random.permutation(k, n)[
        :per_epoch * batch_size].reshape(per_epoch, batch_size))(
            jax.random.split(key, epochs))
    batches = batches.reshape(-1, batch_size)[:steps]
  else:
    batches = jax.random.randint(key, (steps, batch_size), 0, n)
  vnorm = jnp.linalg.norm(direction)

  def cos(g):
    return jnp.dot(g, direction) / (jnp.linalg.norm(g) * vnorm + 1e-300)

  def step(theta, batch):
    xb, yb = x[batch], y[batch]
    g_mb = (n / n_ref) * xb.T @ (xb @ theta - yb) / batch_size + l2 * theta
    g_full = (gram @ theta - moment) / n_ref + l2 * theta
    e = theta - target
    stats = {'cos_minibatch': cos(g_mb), 'cos_full': cos(g_full),
             'dist_l2': jnp.linalg.norm(e), 'dist_l1': jnp.sum(jnp.abs(e)),
             'dist_low': jnp.linalg.norm(e[signal_dim:])}
    return theta - lr * g_mb, stats

  return jax.lax.scan(step, theta0, batches)


def shift_stats(v: np.ndarray, signal_dim: int) -> dict:
  v = np.asarray(v)
  l2 = float(np.linalg.norm(v))
  return {'shift_l1': float(np.abs(v).sum()), 'shift_l2': l2,
          'shift_low_share': float(np.sum(v[signal_dim:] ** 2) / l2 ** 2)
                             if l2 > 0 else math.nan}


def equalised_random_forget(x, y, candidates: np.ndarray, target_l1: float,
                            l2: float, rel_tol: float = 0.01
                            ) -> tuple[int, np.ndarray, float]:
  """A prefix of `candidates` (a seeded order of the w2 half) whose removal
  shifts θ(S_clean) by at least `target_l1` in ℓ1 (App. C.2: "3200 random
  clean training samples to equalize the norm of the model shift").

  Bisection on the prefix length m down to a bracket of max(1, rel_tol · m)
  samples; returns (m, θ(S_clean \\ S_rand), its ℓ1 shift), the upper end
  of the bracket (or every candidate if even that falls short).
  """
  n = x.shape[0]
  gram, moment = normal_equations(x, y, jnp.ones(n))
  theta_full = ridge_from_normal(gram, moment, l2, n)
  xc, yc = x[candidates], y[candidates]
  positions = jnp.arange(len(candidates))

  def shifted(m):
    g_r, m_r = normal_equations(xc, yc, (positions < m).astype(xc.dtype))
    theta = ridge_from_normal(gram - g_r, moment - m_r, l2, n)
    return theta, float(jnp.sum(jnp.abs(theta_full - theta)))

  lo, hi = 0, len(candidates)
  best = (hi, *shifted(hi))
  if best[2] < target_l1:
    return best
  while hi - lo > max(1, int(rel_tol * hi)):
    mid = (lo + hi) // 2
    theta, shift = shifted(mid)
    if shift >= target_l1:
      hi, best = mid, (mid, theta, shift)
    else:
      lo = mid
  return best


# --------------------------------------------------------------------------
# The study.
# --------------------------------------------------------------------------


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks names, sizes and ranges before any work; raises ConfigError."""
  for part in config.parts:
    if part not in PARTS:
      raise ConfigError(f'Unknown part {part!r} in config.parts; valid: '
                        f'{", ".join(PARTS)}')
  if not config.parts:
    raise ConfigError('config.parts is empty: nothing to run')
  if not config.seeds:
    raise ConfigError('config.seeds is empty')
  ms, ga = config.model_shift, config.gradient_alignment
  if 'model_shift' in config.parts:
    try:
      data.check_dataset(config.dataset)
      models.get_model(config.model, 10, **config.model_kwargs)
    except (ValueError, TypeError) as e:
      raise ConfigError(str(e)) from e
    for kind in ms.poisons:
      if kind not in POISONS:
        raise ConfigError(f'Unknown poison {kind!r} in model_shift.poisons; '
                          f'valid: {", ".join(POISONS)}')
    if not ms.poisons:
      raise ConfigError('model_shift.poisons is empty')
    for beta in ms.betas:
      if not (isinstance(beta, (int, float)) and 0 < beta <= 1):
        raise ConfigError(f'β {beta!r} in model_shift.betas is outside '
                          '(0, 1]: it is the share of the poisons removed.')
    if not ms.betas:
      raise ConfigError('model_shift.betas is empty')
    if ms.num_poisons < 1:
      raise ConfigError('model_shift.num_poisons must be ≥ 1')
    if ms.l2 <= 0:
      raise ConfigError('model_shift.l2 must be > 0 (a unique optimum)')
  if 'gradient_alignment' in config.parts:
    if not 0 < ga.signal_dim < ga.dim:
      raise ConfigError('gradient_alignment: need 0 < signal_dim < dim')
    if ga.num_poisons < 1 or ga.n < 4:
      raise ConfigError('gradient_alignment: num_poisons ≥ 1 and n ≥ 4')
    if ga.gd.batch_size < 1 or ga.gd.steps < 1:
      raise ConfigError('gradient_alignment.gd: batch_size, steps ≥ 1')
    if ga.l2 < 0:
      raise ConfigError('gradient_alignment.l2 must be ≥ 0')


def _feature_setting(config) -> dict:
  return {'study': STUDY, 'dataset': config.dataset,
          'image_size': config.image_size, 'max_train': config.max_train,
          'max_test': config.max_test, 'model': config.model,
          'model_kwargs': config.model_kwargs.to_dict(),
          'recipe': config.recipe.to_dict(),
          'feature_seed': config.feature_seed}


def model_shift_setting(config, kind: str) -> dict:
  """What makes the numbers of a (poison, seed, β) row what they are."""
  ms = config.model_shift
  return {**_feature_setting(config), 'part': 'model_shift', 'poison': kind,
          'poison_settings': ms[kind].to_dict(), 'num_poisons': ms.num_poisons,
          'l2': ms.l2, 'tol': ms.tol, 'max_iter': ms.max_iter,
          'standardize': ms.standardize}


def alignment_setting(config) -> dict:
  return {'study': STUDY, 'part': 'gradient_alignment',
          **config.gradient_alignment.to_dict()}


def _plan(config):
  """[(run key, part, unit)] of this sweep, in run order."""
  plan = []
  if 'model_shift' in config.parts:
    for kind in config.model_shift.poisons:
      base = model_shift_setting(config, kind)
      for seed in config.seeds:
        for beta in config.model_shift.betas:
          plan.append((run_key({**base, 'seed': seed, 'beta': beta}),
                       'model_shift', (kind, seed, beta)))
  if 'gradient_alignment' in config.parts:
    base = alignment_setting(config)
    for seed in config.seeds:
      for forget in ('poison', 'random'):
        plan.append((run_key({**base, 'seed': seed, 'forget': forget}),
                     'gradient_alignment', (seed, forget)))
  return plan


def run(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Runs (or resumes) the study; returns the rows of this sweep."""
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  results = ResultsFile(os.path.join(workdir, 'results.jsonl'))
  done = results.done_keys()
  is_writer = jax.process_index() == 0
  plan = _plan(config)
  current = {key for key, _, _ in plan}
  progress = tqdm.tqdm(total=len(plan), desc=STUDY, unit='row',
                       disable=not is_writer, dynamic_ncols=True)
  progress.update(sum(key in done for key in current))

  def append(row):
    if is_writer:
      results.append(row)
    progress.update(1)

  todo = [(key, part, unit) for key, part, unit in plan if key not in done]
  if any(part == 'model_shift' for _, part, _ in todo):
    _run_model_shift(config, workdir, todo, append, progress)
  if any(part == 'gradient_alignment' for _, part, _ in todo):
    _run_alignment(config, todo, append, progress)
  progress.close()
  return [row for row in results.rows() if row['run_key'] in current]


def _run_model_shift(config, workdir, todo, append, progress):
  ms = config.model_shift
  train, test = data.load_dataset(
      config.dataset, data_dir=config.data_dir or None,
      download=config.download, max_train=config.max_train or None,
      max_test=config.max_test or None, seed=0, image_size=config.image_size)
  model = models.get_model(config.model, train.num_classes,
                           **config.model_kwargs)
  setting = _feature_setting(config)
  progress.set_postfix_str('training the feature extractor')
  variables, _ = trained_model(
      workdir, f'why_fails-features-{run_key(setting)[:16]}', model,
      training.Recipe(**config.recipe.to_dict()), train, None,
      seed_key(config.feature_seed, 'why_fails/features'),
      {'setting': setting})
  extractor_accuracy = training.accuracy(model, variables, test)
  clean = penultimate_features(model, variables, train.images)
  test_clean = penultimate_features(model, variables, test.images)
  # One fixed affine map (from the clean training features) for every run.
  mean = clean.mean(0) if ms.standardize else np.zeros(clean.shape[1])
  std = clean.std(0) + 1e-6 if ms.standardize else np.ones(clean.shape[1])
  standard = lambda f: (f - mean) / std  # pylint: disable=unnecessary-lambda-assignment
  clean_std, test_std = standard(clean), standard(test_clean)

  wanted = collections.defaultdict(dict)
  for key, part, unit in todo:
    if part == 'model_shift':
      kind, seed, beta = unit
      wanted[(kind, seed)][beta] = key
  for (kind, seed), keys in wanted.items():
    progress.set_postfix_str(f'model shift {kind} seed={seed}')
    start = time.time()
    feats, labels, rows, affected = poisoned_features(
        kind, train=train, test=test, model=model, variables=variables,
        clean_features=clean_std, num_poisons=ms.num_poisons, seed=seed,
        settings=ms[kind].to_dict(), transform=standard)
    betas = list(ms.betas)
    weights, counts = removal_weights(len(labels), rows, betas, seed)
    with jax.enable_x64(True):
      solve = functools.partial(
          fit_logistic, jnp.asarray(feats), jnp.asarray(labels),
          num_classes=train.num_classes, max_iter=ms.max_iter,
          memory_size=ms.memory_size)
      solved = [solve(jnp.asarray(w), ms.l2, float(len(labels)), ms.tol)
                for w in weights]
      params = jax.tree.map(lambda *leaves: jnp.stack(leaves),
                            *[p for p, _, _ in solved])
      grad_norms = [g for _, g, _ in solved]
      iterations = [i for _, _, i in solved]
      thetas = np.asarray(flat_parameters(params))
      predictions = {name: np.asarray(jnp.argmax(
          jnp.asarray(f) @ params['w'] + params['b'][:, None, :], -1))
                     for name, f in (('test', test_std),) + (
                         (('affected', affected[0]),) if affected else ())}
    grad_norms, iterations = np.asarray(grad_norms), np.asarray(iterations)
    if np.max(grad_norms) >= ms.tol:
      raise FloatingPointError(
          f'model shift {kind} seed={seed}: L-BFGS stopped at ‖∇f‖ = '
          f'{np.max(grad_norms):.2e} ≥ tol {ms.tol:g} after {ms.max_iter} '
          'iterations; raise --config.model_shift.max_iter or the tolerance.')
    seconds = time.time() - start
    truth = {'test': test.labels,
             'affected': affected[1] if affected else None}
    accuracy = lambda name, i: float(np.mean(  # pylint: disable=unnecessary-lambda-assignment
        predictions[name][i] == truth[name]))  # noqa: B023
    nb = len(betas)
    for j, beta in enumerate(betas):
      if beta not in keys:
        continue
      d_poison = thetas[0] - thetas[1 + j]
      d_random = thetas[0] - thetas[1 + nb + j]
      row = {
          'study': STUDY, 'part': 'model_shift', 'poison': kind,
          'dataset': config.dataset, 'model': config.model, 'seed': seed,
          'beta': beta, 'n_removed': counts[j], 'n_poisons': int(rows.size),
          'n_train': len(labels), 'feature_dim': int(feats.shape[1]),
          'l2': ms.l2, 'tol': ms.tol,
          'shift_poison_l1': float(np.abs(d_poison).sum()),
          'shift_poison_l2': float(np.linalg.norm(d_poison)),
          'shift_random_l1': float(np.abs(d_random).sum()),
          'shift_random_l2': float(np.linalg.norm(d_random)),
          'theta_l1': float(np.abs(thetas[0]).sum()),
          'theta_l2': float(np.linalg.norm(thetas[0])),
          'grad_norm_max': float(np.max(grad_norms)),
          'lbfgs_iterations_max': int(np.max(iterations)),
          'acc_test_corr': accuracy('test', 0),
          'acc_test_unlearned': accuracy('test', 1 + j),
          'acc_test_random_removed': accuracy('test', 1 + nb + j),
          'acc_affected_corr': accuracy('affected', 0) if affected else None,
          'acc_affected_unlearned': (accuracy('affected', 1 + j) if affected
                                     else None),
          'extractor_test_accuracy': extractor_accuracy,
          'seconds': seconds, 'setting_key': run_key(
              model_shift_setting(config, kind)), 'run_key': keys[beta]}
      append(row)


def _curve(values) -> list[float]:
  return [float(f'{v:.6g}') for v in np.asarray(values).tolist()]


def _summary(stats: dict, prefix: str) -> dict:
  cos_mb, cos_full = np.asarray(stats['cos_minibatch']), np.asarray(
      stats['cos_full'])
  dist, low = np.asarray(stats['dist_l2']), np.asarray(stats['dist_low'])
  first = min(10, cos_mb.size)
  return {f'{prefix}cos_minibatch_mean': float(cos_mb.mean()),
          f'{prefix}cos_minibatch_first10': float(cos_mb[:first].mean()),
          f'{prefix}cos_full_first': float(cos_full[0]),
          f'{prefix}cos_full_mean': float(cos_full.mean()),
          f'{prefix}dist_start': float(dist[0]),
          f'{prefix}dist_end': float(dist[-1]),
          f'{prefix}dist_low_start': float(low[0]),
          f'{prefix}dist_low_end': float(low[-1]),
          f'{prefix}curves': {name: _curve(v) for name, v in stats.items()}}


def _run_alignment(config, todo, append, progress):
  ga = config.gradient_alignment
  wanted = collections.defaultdict(dict)
  for key, part, unit in todo:
    if part == 'gradient_alignment':
      seed, forget = unit
      wanted[seed][forget] = key
  with jax.enable_x64(True):
    # The data set is fixed (App. C.2 varies the poison initialisation and
    # the random subsets over 5 runs); `seed` drives everything else.
    dkey = seed_key(ga.data_seed, 'why_fails/synthetic')
    kw, ktrain, ktest = jax.random.split(dkey, 3)
    w1, w2 = planted_directions(kw, dim=ga.dim, signal_dim=ga.signal_dim)
    common = dict(dim=ga.dim, signal_dim=ga.signal_dim, low_std=ga.low_std,
                  noise_std=ga.noise_std)
    x, y = make_synthetic(ktrain, w1, w2, n=ga.n, **common)
    x_test, y_test = make_synthetic(ktest, w1, w2, n=ga.n_test, **common)
    n, p = ga.n, ga.num_poisons
    ones = jnp.ones(n)
    gram, moment = normal_equations(x, y, ones)
    theta_clean_n = ridge_from_normal(gram, moment, ga.l2, n)
    test_mse = lambda t: float(jnp.mean(jnp.square(x_test @ t - y_test)))  # pylint: disable=unnecessary-lambda-assignment

    for seed, keys in wanted.items():
      progress.set_postfix_str(f'gradient alignment seed={seed}')
      start = time.time()
      k_pc, k_init, k_rand, k_gd, k_theta = jax.random.split(
          seed_key(seed, 'why_fails/alignment'), 5)
      # GradPC target and Gradient Canceling poisons (App. A.1.3, C.2).
      theta_low = gradpc(k_pc, theta_clean_n, x_test, y_test,
                         radius=ga.gradpc.radius, steps=ga.gradpc.steps,
                         lr=ga.gradpc.lr)
      clean_grad = (x.T @ (x @ theta_low - y)) / n + ga.l2 * theta_low
      init_rows = jax.random.choice(k_init, n, (p,), replace=False)
      x_poison, gc_start, gc_end = gradient_canceling(
          theta_low, clean_grad, x[init_rows], y[init_rows], lr=ga.gc.lr,
          epochs=ga.gc.epochs)
      y_poison = y[init_rows]
      n_corr = n + p
      g_p, m_p = normal_equations(x_poison, y_poison, jnp.ones(p))
      theta_corr = ridge_from_normal(gram + g_p, moment + m_p, ga.l2, n_corr)
      theta_target = ridge_from_normal(gram, moment, ga.l2, n_corr)
      v_poison = theta_corr - theta_target
      poison_shift = shift_stats(v_poison, ga.signal_dim)
      # Random clean forget set of the w2 half with the same ℓ1 shift.
      candidates = np.asarray(n // 2 + jax.random.permutation(
          k_rand, n - n // 2))
      m, theta_rand_target, _ = equalised_random_forget(
          x, y, candidates, poison_shift['shift_l1'], ga.l2)
      keep = np.setdiff1d(np.arange(n), candidates[:m])
      v_random = theta_clean_n - theta_rand_target
      # θ_random of Fig. 5's red curves: a fresh initialisation,
      # U(−1/√d, 1/√d) as torch.nn.Linear draws it.
      bound = 1.0 / math.sqrt(ga.dim)
      theta_init = jax.random.uniform(k_theta, (ga.dim,), minval=-bound,
                                      maxval=bound)
      gd = functools.partial(clean_gradient_descent, lr=ga.gd.lr,
                             steps=ga.gd.steps, batch_size=ga.gd.batch_size,
                             signal_dim=ga.signal_dim)
      setups = {
          'poison': (x, y, n_corr, theta_corr, theta_target, v_poison, p),
          'random': (x[keep], y[keep], n, theta_clean_n, theta_rand_target,
                     v_random, m)}
      for forget, (xs, ys, n_ref, start_theta, target, v, n_forget) in (
          setups.items()):
        if forget not in keys:
          continue
        k_blue, k_red = jax.random.split(jax.random.fold_in(
            k_gd, 0 if forget == 'poison' else 1))
        _, blue = gd(k_blue, start_theta, target, v, xs, ys, ga.l2,
                     float(n_ref))
        _, red = gd(k_red, theta_init, target, theta_init - target, xs, ys,
                    ga.l2, float(n_ref))
        blue = jax.device_get(blue)
        red = jax.device_get(red)
        row = {
            'study': STUDY, 'part': 'gradient_alignment', 'seed': seed,
            'forget': forget, 'n_forget': int(n_forget), 'n': n,
            'dim': ga.dim, 'signal_dim': ga.signal_dim, 'l2': ga.l2,
            **shift_stats(v, ga.signal_dim),
            'poison_shift_l1': poison_shift['shift_l1'],
            'gc_loss_start': float(gc_start), 'gc_loss_end': float(gc_end),
            'test_mse_clean': test_mse(theta_target if forget == 'poison'
                                       else theta_clean_n),
            'test_mse_corr': test_mse(theta_corr),
            'test_mse_low': test_mse(theta_low),
            **_summary(blue, ''), **_summary(red, 'red_'),
            'seconds': time.time() - start,
            'setting_key': run_key(alignment_setting(config)),
            'run_key': keys[forget]}
        append(row)


# --------------------------------------------------------------------------
# Report: figures and tables from the rows alone.
# --------------------------------------------------------------------------

POISON_LABELS = {'badnet': 'BadNet (library; trigger + relabel)',
                 'ic': 'Interclass confusion (library; label flips)',
                 'gaussian': 'Gaussian (paper §4.3, in feature space)'}


def _mean_std(values):
  values = [v for v in values if v is not None and not
            (isinstance(v, float) and math.isnan(v))]
  if not values:
    return math.nan, math.nan
  return float(np.mean(values)), float(np.std(values))


def _fmt(mean, std=None, digits=3):
  if math.isnan(mean):
    return '–'
  if std is None or math.isnan(std):
    return f'{mean:.{digits}g}'
  return f'{mean:.{digits}g} ± {std:.{digits - 1}g}'


def write_model_shift(rows, workdir) -> list[str]:
  """model_shift.png (Fig. 4) and model_shift.md."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = [r for r in rows if r.get('part') == 'model_shift']
  kinds = [k for k in POISONS if any(r['poison'] == k for r in rows)]
  if not kinds:
    return []
  fig, axes = plt.subplots(2, len(kinds), figsize=(4.2 * len(kinds), 6.4),
                           squeeze=False)
  intro = ('Logistic regression (multinomial, L2, solved to ‖∇f‖ < tol by '
           'L-BFGS) on the fixed penultimate features of a small CNN trained '
           'on the clean digits. ‖θ(S_corr) − θ(S_corr \\ S_poison^(β))‖ '
           '(poisons removed) vs ‖θ(S_corr) − θ(S_corr \\ S_rand^(β))‖ (as '
           'many random clean samples removed); mean ± std over seeds.')
  lines = ['# Hypothesis 1: model shift (Pawelczyk et al. §6, Fig. 4; App. C.1)',
           '', intro, '']
  for col, kind in enumerate(kinds):
    krows = [r for r in rows if r['poison'] == kind]
    betas = sorted({r['beta'] for r in krows})
    seeds = sorted({r['seed'] for r in krows})
    ref = krows[0]
    sizes = (f'S_corr: {ref["n_train"]} samples, {ref["n_poisons"]} of them '
             f'poisons; feature dim {ref["feature_dim"]}, l2 = '
             f'{ref["l2"]:g}, {len(seeds)} seed(s); max ‖∇f‖ at the optima '
             f'{max(r["grad_norm_max"] for r in krows):.1e} (tol '
             f'{ref["tol"]:g}).')
    lines += [f'## {POISON_LABELS[kind]}', '', sizes, '']
    acc_c = _mean_std([r['acc_test_corr'] for r in krows])
    full = [r for r in krows if r['beta'] == max(betas)]
    acc_u = _mean_std([r['acc_test_unlearned'] for r in full])
    lines.append(f'Test accuracy of θ(S_corr): {_fmt(*acc_c)}; after removing '
                 f'{max(betas):.0%} of the poisons: {_fmt(*acc_u)}.')
    if ref.get('acc_affected_corr') is not None:
      aff_c = _mean_std([r['acc_affected_corr'] for r in krows])
      aff_u = _mean_std([r['acc_affected_unlearned'] for r in full])
      lines.append(f'Accuracy on the affected test set D_m: θ(S_corr) '
                   f'{_fmt(*aff_c)}; after removing {max(betas):.0%}: '
                   f'{_fmt(*aff_u)}.')
    lines += ['', ('| β | removed | ℓ1 poisons | ℓ1 random | ratio ℓ1 | '
                   'ℓ2 poisons | ℓ2 random | ratio ℓ2 |'), '|' + '---|' * 8]
    for row_i, norm in enumerate(('l1', 'l2')):
      ax = axes[row_i, col]
      for what, color, label in (('poison', 'tab:red', 'poisons removed'),
                                 ('random', 'tab:orange',
                                  'random clean removed')):
        stats = [_mean_std([r[f'shift_{what}_{norm}'] for r in krows
                            if r['beta'] == b]) for b in betas]
        mean = np.array([s[0] for s in stats])
        std = np.array([s[1] for s in stats])
        xs = 100 * np.array(betas)
        ax.plot(xs, mean, 'o-', color=color, label=label, ms=3)
        ax.fill_between(xs, mean - std, mean + std, color=color, alpha=0.2)
      ax.set_xlabel('β: share of the poisons unlearnt (%)')
      ax.set_ylabel(f'model shift (ℓ{norm[1]})')
      ax.grid(alpha=0.3)
      if row_i == 0:
        ax.set_title(POISON_LABELS[kind], fontsize=9)
        ax.legend(fontsize=8)
    for b in betas:
      br = [r for r in krows if r['beta'] == b]
      cells = [f'{b:.0%}', str(br[0]['n_removed'])]
      for norm in ('l1', 'l2'):
        p = _mean_std([r[f'shift_poison_{norm}'] for r in br])
        q = _mean_std([r[f'shift_random_{norm}'] for r in br])
        ratio = _mean_std([r[f'shift_poison_{norm}'] / r[f'shift_random_{norm}']
                           for r in br])
        cells += [_fmt(*p), _fmt(*q), _fmt(*ratio)]
      lines.append('| ' + ' | '.join(cells) + ' |')
    lines.append('')
  fig.suptitle('Model shift of exact unlearning: poisons vs random clean '
               'samples (logistic regression on fixed CNN features)',
               fontsize=10)
  fig.tight_layout()
  png = os.path.join(workdir, 'model_shift.png')
  fig.savefig(png, dpi=120)
  plt.close(fig)
  md = os.path.join(workdir, 'model_shift.md')
  with open(md, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  return [png, md]


def _bands(ax, curves, color, label, style='-'):
  arr = np.asarray(curves, dtype=float)
  mean, std = arr.mean(0), arr.std(0)
  steps = np.arange(arr.shape[1])
  ax.plot(steps, mean, style, color=color, label=label, lw=1)
  ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2)


def write_gradient_alignment(rows, workdir) -> list[str]:
  """gradient_alignment.png (Fig. 5 plus distances and a histogram) and
  gradient_alignment.md."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = [r for r in rows if r.get('part') == 'gradient_alignment']
  if not rows:
    return []
  by = {f: [r for r in rows if r['forget'] == f] for f in ('poison', 'random')}
  titles = {'poison': '(a) S_poison: Gradient Canceling poisons',
            'random': '(b) S_poison: random clean samples (equal ℓ1 shift)'}
  fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
  for i, forget in enumerate(('poison', 'random')):
    ax = axes[0, i]
    frows = by[forget]
    if not frows:
      continue
    _bands(ax, [r['curves']['cos_minibatch'] for r in frows], 'tab:blue',
           'v_blue = θ(S_corr) − θ(S_corr∖S_poison)')
    _bands(ax, [r['red_curves']['cos_minibatch'] for r in frows], 'tab:red',
           'v_red = θ_random − θ(S_corr∖S_poison)')
    _bands(ax, [r['curves']['cos_full'] for r in frows], 'navy',
           'v_blue, full clean gradient', style='--')
    ax.axhline(0, color='k', lw=0.5)
    ax.set_title(titles[forget], fontsize=9)
    ax.set_xlabel('step t of gradient descent on clean data')
    ax.set_ylabel('⟨v, g_t⟩ / ‖v‖‖g_t‖')
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
  ax = axes[1, 0]
  for forget, color in (('poison', 'tab:blue'), ('random', 'tab:green')):
    if by[forget]:
      _bands(ax, [np.asarray(r['curves']['dist_l2']) / r['curves']['dist_l2'][0]
                  for r in by[forget]], color, f'{forget}: ‖θ_t − θ*‖₂ / ‖v‖₂')
      _bands(ax, [np.asarray(r['curves']['dist_low'])
                  / r['curves']['dist_l2'][0] for r in by[forget]], color,
             f'{forget}: low-variance part', style=':')
  ax.set_xlabel('step t')
  ax.set_ylabel('remaining distance to θ(S_corr∖S_poison), relative')
  ax.set_title('(c) distance left to the unlearning target', fontsize=9)
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  ax = axes[1, 1]
  for forget, color in (('poison', 'tab:blue'), ('random', 'tab:green')):
    if by[forget]:
      values = np.concatenate([r['curves']['cos_minibatch']
                               for r in by[forget]])
      ax.hist(values, bins=60, alpha=0.5, color=color, density=True,
              label=f'{forget}: cos(g_t, v_blue)')
  ax.set_xlabel('cosine similarity')
  ax.set_title('(d) histogram over all steps and seeds', fontsize=9)
  ax.legend(fontsize=7)
  fig.suptitle('Clean-gradient directions vs the desired unlearning shift '
               '(synthetic linear regression, App. C.2)', fontsize=10)
  fig.tight_layout()
  png = os.path.join(workdir, 'gradient_alignment.png')
  fig.savefig(png, dpi=120)
  plt.close(fig)

  ref = rows[0]
  intro = (f'Synthetic ridge regression: N = {ref["n"]}, d = {ref["dim"]}, '
           f'signal coordinates k = {ref["signal_dim"]}, l2 = {ref["l2"]:g}; '
           f'{len(by["poison"])} seed(s). Gradient descent on the clean data '
           'from θ(S_corr) (blue) or from a random initialisation (red); '
           'v = desired shift. "low share" = share of ‖v‖₂² in the '
           'low-variance coordinates k+1..d. Mean ± std over seeds.')
  header = ('| forget set | size of S_f | ‖v‖₁ | ‖v‖₂ | low share | '
            'cos(g_t, v) first 10 | cos(g_t, v) all | cos(full ∇, v) at t=0 '
            '| red cos first 10 | ‖θ_t − θ*‖₂ start → end | low part start '
            '→ end |')
  title = '# Hypothesis 2: gradient alignment (Pawelczyk et al. §6, Fig. 5; App. C.2)'
  lines = [title, '', intro, '', header, '|' + '---|' * 11]
  for forget in ('poison', 'random'):
    frows = by[forget]
    if not frows:
      continue
    ms_ = lambda k, rs=frows: _mean_std([r[k] for r in rs])  # pylint: disable=unnecessary-lambda-assignment
    lines.append('| ' + ' | '.join([
        'GC poisons' if forget == 'poison' else 'random clean (w2 half)',
        _fmt(*ms_('n_forget'), digits=4), _fmt(*ms_('shift_l1')),
        _fmt(*ms_('shift_l2')), _fmt(*ms_('shift_low_share')),
        _fmt(*ms_('cos_minibatch_first10')), _fmt(*ms_('cos_minibatch_mean')),
        _fmt(*ms_('cos_full_first')), _fmt(*ms_('red_cos_minibatch_first10')),
        f'{_fmt(ms_("dist_start")[0])} → {_fmt(ms_("dist_end")[0])}',
        f'{_fmt(ms_("dist_low_start")[0])} → {_fmt(ms_("dist_low_end")[0])}'])
                 + ' |')
  prow = by['poison']
  if prow:
    gc0, gc1 = _mean_std([r['gc_loss_start'] for r in prow]), _mean_std(
        [r['gc_loss_end'] for r in prow])
    lines += ['', (f'Gradient Canceling loss (Eq. 4): {_fmt(*gc0)} → '
                   f'{_fmt(*gc1)}. Test MSE: clean θ(S_corr∖S_poison) '
              f'{_fmt(*_mean_std([r["test_mse_clean"] for r in prow]))}, '
              f'poisoned θ(S_corr) '
              f'{_fmt(*_mean_std([r["test_mse_corr"] for r in prow]))}, '
              f'GradPC target θ_low '
              f'{_fmt(*_mean_std([r["test_mse_low"] for r in prow]))}.')]
  md = os.path.join(workdir, 'gradient_alignment.md')
  with open(md, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  return [png, md]


REPORT_INTRO = """# Why unlearning fails to remove poisons (Pawelczyk et al. 2024, §6, App. C)

Reproduced at a small scale with `experiments/why_fails.py`; every number
below comes from `results.jsonl` in this folder.

Deviations from the paper:

* Hypothesis 1 (Fig. 4): the features are the penultimate activations of a
  small CNN trained on the clean scikit-learn digits (not a CIFAR-10
  ResNet-18), and the poisons are stand-ins: the library's BadNet and
  interclass-confusion (label-flip) poisons through the fixed extractor, and
  the paper's Gaussian poisons added in feature space, instead of Gradient
  Canceling and Witch's Brew, which this library does not craft. The random
  baseline removes clean samples of the same S_corr.
* Hypothesis 2 (Fig. 5): App. C.2's data at full size, ridge-regularised
  (θ(S) is the closed-form ridge solution; the paper trains "from scratch"
  without saying how); GradPC is projected gradient ascent on the test loss;
  Gradient Canceling follows Eq. 4 with η and the 500 epochs of App. C.2, by
  full-batch steps. θ_random (red) is read as a fresh U(−1/√d, 1/√d)
  initialisation. The full-batch cosine is shown besides the paper's
  mini-batch one.
"""


def write_report(rows, workdir) -> str:
  """Writes the figures, their tables and `report.md`; returns its path."""
  written = write_model_shift(rows, workdir) + write_gradient_alignment(
      rows, workdir)
  parts = [REPORT_INTRO]
  for name, png in (('model_shift.md', 'model_shift.png'),
                    ('gradient_alignment.md', 'gradient_alignment.png')):
    path = os.path.join(workdir, name)
    if path in written:
      with open(path) as f:
        parts.append(f.read())
      parts.append(f'![{png}]({png})\n')
  report = os.path.join(workdir, 'report.md')
  with open(report, 'w') as f:
    f.write('\n'.join(parts))
  return report
