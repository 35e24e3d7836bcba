r"""Why unlearning fails to remove poisons (Pawelczyk et al. 2024, §6, App. C).

Two convex experiments whose objectives have unique minimisers, so "the model
after exact unlearning" θ(S') is computable and model shifts are well defined
(the solvers are in `unlearnjax.convex`):

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

On the sweep engine (`unlearnjax.sweep`): one group for Fig. 4 (its set-up is
the fixed feature extractor, trained once and shared by every poison and
seed; the runs are (poison, seed, β), and the β runs of one (poison, seed)
share its L-BFGS solves), and one group per seed for Fig. 5 (its set-up
builds the poisons, θ(S_corr), the unlearning targets and the equalised
random forget set; the runs are the two forget sets). Everything runs in
float64 (`jax.enable_x64`) so the optima are resolved far below the shifts
being measured. The report is `unlearnjax.reports.why_fails`.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from unlearnjax import convex, curves, data, models, sweep, training
from unlearnjax.errors import ConfigError
from unlearnjax.manipulations import badnet, interclass
from unlearnjax.manipulations.base import host_rng
from unlearnjax.results import run_key

STUDY = 'why_fails'
POISONS = ('badnet', 'ic', 'gaussian')
PARTS = ('model_shift', 'gradient_alignment')
FORGET_SETS = ('poison', 'random')   # Fig. 5 (a) and (b)


# --------------------------------------------------------------------------
# Hypothesis 1 (§6, Fig. 4; App. C.1): logistic regression on fixed features.
# --------------------------------------------------------------------------


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


def shift_stats(v: np.ndarray, signal_dim: int) -> dict:
  """‖v‖₁, ‖v‖₂ of a desired shift v and the share of ‖v‖₂² in the
  low-variance coordinates ≥ `signal_dim` (where App. C.2 plants the
  poisons' effect)."""
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
  gram, moment = convex.normal_equations(x, y, jnp.ones(n))
  theta_full = convex.ridge_from_normal(gram, moment, l2, n)
  xc, yc = x[candidates], y[candidates]
  positions = jnp.arange(len(candidates))

  def shifted(m):
    g_r, m_r = convex.normal_equations(xc, yc, (positions < m).astype(xc.dtype))
    theta = convex.ridge_from_normal(gram - g_r, moment - m_r, l2, n)
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
# The study on the sweep engine.
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
  """What makes the fixed feature extractor what it is (its checkpoint name)."""
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
  """What makes the numbers of a (seed, forget set) row what they are."""
  return {'study': STUDY, 'part': 'gradient_alignment',
          **config.gradient_alignment.to_dict()}


def plan(config: ml_collections.ConfigDict, workdir: str) -> sweep.Plan:
  """The study's runs (module doc): the Fig. 4 group (its runs in (poison,
  seed, β) order), then one Fig. 5 group per seed."""
  validate_config(config)
  groups = []
  if 'model_shift' in config.parts:
    groups.append(_model_shift_group(config, workdir))
  if 'gradient_alignment' in config.parts:
    groups += [_alignment_group(config, seed) for seed in config.seeds]
  return sweep.Plan(STUDY, groups)


def run(config: ml_collections.ConfigDict, workdir: str,
        worker: sweep.Worker | None = None) -> list[dict]:
  """Runs (or resumes) this worker's share; returns the sweep's rows."""
  return sweep.execute(plan(config, workdir), workdir, worker).rows


# --- Fig. 4: model shift -----------------------------------------------------


@dataclasses.dataclass
class FeatureSetup:
  """What every Fig. 4 run shares: the fixed extractor (App. C.1's "fixed
  feature extractor", trained once on the clean split) and its features."""
  train: data.Split
  test: data.Split
  model: nn.Module
  variables: dict
  extractor_accuracy: float
  mean: np.ndarray            # the fixed affine map of the clean features
  std: np.ndarray
  train_features: np.ndarray  # standardised clean training features
  test_features: np.ndarray
  solves: dict                # (poison, seed) -> SubsetSolves or its error

  def standardize(self, features: np.ndarray) -> np.ndarray:
    return (features - self.mean) / self.std


@dataclasses.dataclass
class SubsetSolves:
  """θ of S_corr and of every S_corr \\ S_poison^(β), S_corr \\ S_rand^(β) of
  one (poison, seed), in `removal_weights`' order; shared by its β runs."""
  thetas: np.ndarray          # (1 + 2 len(betas), dim)
  predictions: dict           # 'test' / 'affected' -> (1 + 2 len(betas), n)
  truth: dict                 # 'test' / 'affected' -> true labels (or None)
  counts: list                # |S_poison^(β)| per β
  n_poisons: int
  n_train: int
  feature_dim: int
  grad_norm_max: float
  iterations_max: int
  timing: sweep.Timing


def _feature_setup(config, workdir) -> FeatureSetup:
  """The Fig. 4 group's set-up: the data, the extractor trained on the clean
  training split (an orbax checkpoint in the workdir, so a rerun restores
  it), and its standardised features of the clean train and test splits."""
  ms = config.model_shift
  # No validation split: the study selects nothing (exact unlearning only).
  train, test = data.load_dataset(
      config.dataset, data_dir=config.data_dir or None,
      download=config.download, max_train=config.max_train or None,
      max_test=config.max_test or None, seed=0, image_size=config.image_size)
  model = models.get_model(config.model, train.num_classes,
                           **config.model_kwargs)
  setting = _feature_setting(config)
  # Curves: no method here has a step loop; the extractor's training is
  # recorded (its training metrics only: no S_f, no validation split).
  with curves.recording(workdir, STUDY, 'features/extractor',
                        curves.every(config),
                        curves.evaluator(model, None, None)) as curve:
    variables, _ = sweep.trained_model(
        workdir, f'why_fails-features-{run_key(setting)[:16]}', model,
        training.Recipe(**config.recipe.to_dict()), train, None,
        sweep.seed_key(config.feature_seed, 'why_fails/features'),
        {'setting': setting}, curve=curve)
  extractor_accuracy = training.accuracy(model, variables, test)
  clean = penultimate_features(model, variables, train.images)
  test_clean = penultimate_features(model, variables, test.images)
  # One fixed affine map (from the clean training features) for every run.
  mean = clean.mean(0) if ms.standardize else np.zeros(clean.shape[1])
  std = clean.std(0) + 1e-6 if ms.standardize else np.ones(clean.shape[1])
  return FeatureSetup(train, test, model, variables, extractor_accuracy, mean,
                      std, (clean - mean) / std, (test_clean - mean) / std, {})


def _solve_subsets(config, s: FeatureSetup, kind: str,
                   seed: int) -> SubsetSolves:
  """Poisons S_corr (`poisoned_features`) and solves App. C.1's logistic
  regression on it and on every subset of `removal_weights`.

  Raises:
    FloatingPointError: L-BFGS stopped before ‖∇f‖₂ < tol on some subset,
      or at a NaN (the shifts would not be those of exact unlearning); the
      engine turns it into a diverged row per β.
  """
  ms = config.model_shift
  with sweep.timed() as timing:
    feats, labels, rows, affected = poisoned_features(
        kind, train=s.train, test=s.test, model=s.model,
        variables=s.variables, clean_features=s.train_features,
        num_poisons=ms.num_poisons, seed=seed, settings=ms[kind].to_dict(),
        transform=s.standardize)
    weights, counts = removal_weights(len(labels), rows, list(ms.betas), seed)
    with jax.enable_x64(True):
      solve = functools.partial(
          convex.fit_logistic, jnp.asarray(feats), jnp.asarray(labels),
          num_classes=s.train.num_classes, max_iter=ms.max_iter,
          memory_size=ms.memory_size)
      solved = [solve(jnp.asarray(w), ms.l2, float(len(labels)), ms.tol)
                for w in weights]
      params = jax.tree.map(lambda *leaves: jnp.stack(leaves),
                            *[p for p, _, _ in solved])
      thetas = np.asarray(convex.flat_parameters(params))
      predictions = {name: np.asarray(jnp.argmax(
          jnp.asarray(f) @ params['w'] + params['b'][:, None, :], -1))
                     for name, f in (('test', s.test_features),) + (
                         (('affected', affected[0]),) if affected else ())}
      grad_norms = np.asarray([g for _, g, _ in solved])
      iterations = np.asarray([i for _, _, i in solved])
  if not np.all(grad_norms < ms.tol):   # NaN too
    raise FloatingPointError(
        f'model shift {kind} seed={seed}: L-BFGS stopped at ‖∇f‖ = '
        f'{np.max(grad_norms):.2e}, not < tol {ms.tol:g}, after '
        f'{int(np.max(iterations))} iterations (max_iter {ms.max_iter}); '
        'raise --config.model_shift.max_iter or the tolerance.')
  return SubsetSolves(
      thetas=thetas, predictions=predictions,
      truth={'test': s.test.labels,
             'affected': affected[1] if affected else None},
      counts=counts, n_poisons=int(rows.size), n_train=len(labels),
      feature_dim=int(feats.shape[1]), grad_norm_max=float(np.max(grad_norms)),
      iterations_max=int(np.max(iterations)), timing=timing)


def _subset_solves(config, s: FeatureSetup, kind: str,
                   seed: int) -> SubsetSolves:
  """`_solve_subsets`, once per (poison, seed) for all its β runs (a failure
  too: every β run of it becomes a diverged row without solving again)."""
  if (kind, seed) not in s.solves:
    try:
      s.solves[(kind, seed)] = _solve_subsets(config, s, kind, seed)
    except FloatingPointError as e:
      s.solves[(kind, seed)] = e
  solves = s.solves[(kind, seed)]
  if isinstance(solves, FloatingPointError):
    raise solves
  return solves


def model_shift_fields(config, solves: SubsetSolves, beta: float,
                       extractor_accuracy: float) -> dict:
  """A Fig. 4 row's measured fields: the ℓ1 / ℓ2 shifts of removing
  S_poison^(β) and S_rand^(β) from S_corr, and the accuracies around them.

  `seconds` (and `compile_seconds`) are those of the (poison, seed)'s
  poisoning and solves, which its β rows share."""
  ms = config.model_shift
  betas = list(ms.betas)
  j, nb = betas.index(beta), len(betas)
  thetas = solves.thetas
  d_poison = thetas[0] - thetas[1 + j]
  d_random = thetas[0] - thetas[1 + nb + j]
  has_affected = solves.truth['affected'] is not None

  def accuracy(name, i):
    return float(np.mean(solves.predictions[name][i] == solves.truth[name]))

  return {
      'n_removed': solves.counts[j], 'n_poisons': solves.n_poisons,
      'n_train': solves.n_train, 'feature_dim': solves.feature_dim,
      'l2': ms.l2, 'tol': ms.tol,
      'shift_poison_l1': float(np.abs(d_poison).sum()),
      'shift_poison_l2': float(np.linalg.norm(d_poison)),
      'shift_random_l1': float(np.abs(d_random).sum()),
      'shift_random_l2': float(np.linalg.norm(d_random)),
      'theta_l1': float(np.abs(thetas[0]).sum()),
      'theta_l2': float(np.linalg.norm(thetas[0])),
      'grad_norm_max': solves.grad_norm_max,
      'lbfgs_iterations_max': solves.iterations_max,
      'acc_test_corr': accuracy('test', 0),
      'acc_test_unlearned': accuracy('test', 1 + j),
      'acc_test_random_removed': accuracy('test', 1 + nb + j),
      'acc_affected_corr': accuracy('affected', 0) if has_affected else None,
      'acc_affected_unlearned': (accuracy('affected', 1 + j) if has_affected
                                 else None),
      'extractor_test_accuracy': extractor_accuracy,
      'seconds': solves.timing.seconds,
      'compile_seconds': solves.timing.compile_seconds}


def _model_shift_group(config, workdir) -> sweep.Group:
  def model_shift_run(kind, seed, beta):
    base = model_shift_setting(config, kind)
    identity = {'study': STUDY, 'part': 'model_shift', 'poison': kind,
                'dataset': config.dataset, 'model': config.model,
                'seed': seed, 'beta': beta, 'setting_key': run_key(base)}

    def measure(s: FeatureSetup) -> dict:
      return model_shift_fields(config, _subset_solves(config, s, kind, seed),
                                beta, s.extractor_accuracy)

    return sweep.Run(run_key({**base, 'seed': seed, 'beta': beta}),
                     f'Fig. 4 {kind} seed={seed} β={beta}', measure, identity)

  runs = [model_shift_run(kind, seed, beta)
          for kind in config.model_shift.poisons for seed in config.seeds
          for beta in config.model_shift.betas]
  return sweep.Group('Fig. 4: the fixed feature extractor',
                     lambda: _feature_setup(config, workdir), runs)


# --- Fig. 5: gradient alignment ----------------------------------------------


@dataclasses.dataclass(frozen=True)
class SyntheticTask:
  """App. C.2's training and test data with the clean optimum θ(S_clean)."""
  x: jax.Array
  y: jax.Array
  x_test: jax.Array
  y_test: jax.Array
  gram: jax.Array             # Σ x xᵀ over the clean training data
  moment: jax.Array           # Σ y x
  theta_clean: jax.Array      # θ(S_clean), the ridge optimum with n_ref = N

  def test_mse(self, theta) -> float:
    return float(jnp.mean(jnp.square(self.x_test @ theta - self.y_test)))


@functools.lru_cache(maxsize=1)
def synthetic_task(n: int, dim: int, signal_dim: int, low_std: float,
                   noise_std: float, n_test: int, data_seed: int,
                   l2: float) -> SyntheticTask:
  """The data set is fixed (App. C.2 varies the poison initialisation and the
  random subsets over 5 runs, not the data), so every seed's group shares it
  (built once per process, in float64)."""
  with jax.enable_x64(True):
    kw, ktrain, ktest = jax.random.split(
        sweep.seed_key(data_seed, 'why_fails/synthetic'), 3)
    w1, w2 = planted_directions(kw, dim=dim, signal_dim=signal_dim)
    common = dict(dim=dim, signal_dim=signal_dim, low_std=low_std,
                  noise_std=noise_std)
    x, y = make_synthetic(ktrain, w1, w2, n=n, **common)
    x_test, y_test = make_synthetic(ktest, w1, w2, n=n_test, **common)
    gram, moment = convex.normal_equations(x, y, jnp.ones(n))
    theta_clean = convex.ridge_from_normal(gram, moment, l2, n)
  return SyntheticTask(x, y, x_test, y_test, gram, moment, theta_clean)


@dataclasses.dataclass(frozen=True)
class ForgetSet:
  """One panel of Fig. 5: descent on `x, y` (the retain set) from `start`
  towards `target` = θ(retain), with desired shift `direction`."""
  x: jax.Array
  y: jax.Array
  n_ref: int
  start: jax.Array
  target: jax.Array
  direction: jax.Array
  n_forget: int


@dataclasses.dataclass
class AlignmentSetup:
  """What the two forget sets of one seed share (App. A.1.3, C.2)."""
  task: SyntheticTask
  theta_low: jax.Array        # GradPC's target
  theta_corr: jax.Array       # θ(S_corr), S_corr = S_clean ∪ S_poison
  gc_loss_start: float        # Eq. 4 before and after Gradient Canceling
  gc_loss_end: float
  poison_shift_l1: float
  forget_sets: dict           # 'poison' / 'random' -> ForgetSet
  theta_init: jax.Array       # θ_random of the red curves
  gd_key: jax.Array
  timing: sweep.Timing


def _alignment_setup(config, seed: int) -> AlignmentSetup:
  """GradPC's θ_low and the Gradient Canceling poisons (App. A.1.3), the
  exact unlearning targets, and a random clean forget set of the w2 half
  whose removal shifts θ(S_clean) by the poisons' ℓ1 shift (App. C.2)."""
  ga = config.gradient_alignment
  task = synthetic_task(ga.n, ga.dim, ga.signal_dim, ga.low_std, ga.noise_std,
                        ga.n_test, ga.data_seed, ga.l2)
  x, y, n, p = task.x, task.y, ga.n, ga.num_poisons
  with jax.enable_x64(True), sweep.timed() as timing:
    k_pc, k_init, k_rand, k_gd, k_theta = jax.random.split(
        sweep.seed_key(seed, 'why_fails/alignment'), 5)
    theta_low = convex.gradpc(k_pc, task.theta_clean, task.x_test,
                              task.y_test, radius=ga.gradpc.radius,
                              steps=ga.gradpc.steps, lr=ga.gradpc.lr)
    clean_grad = (x.T @ (x @ theta_low - y)) / n + ga.l2 * theta_low
    init_rows = jax.random.choice(k_init, n, (p,), replace=False)
    x_poison, gc_start, gc_end = convex.gradient_canceling(
        theta_low, clean_grad, x[init_rows], y[init_rows], lr=ga.gc.lr,
        epochs=ga.gc.epochs)
    y_poison = y[init_rows]
    n_corr = n + p
    g_p, m_p = convex.normal_equations(x_poison, y_poison, jnp.ones(p))
    theta_corr = convex.ridge_from_normal(task.gram + g_p, task.moment + m_p,
                                          ga.l2, n_corr)
    theta_target = convex.ridge_from_normal(task.gram, task.moment, ga.l2,
                                            n_corr)
    v_poison = theta_corr - theta_target
    poison_shift = shift_stats(v_poison, ga.signal_dim)
    # Random clean forget set of the w2 half with the same ℓ1 shift.
    candidates = np.asarray(n // 2 + jax.random.permutation(
        k_rand, n - n // 2))
    m, theta_rand_target, _ = equalised_random_forget(
        x, y, candidates, poison_shift['shift_l1'], ga.l2)
    keep = np.setdiff1d(np.arange(n), candidates[:m])
    v_random = task.theta_clean - theta_rand_target
    # θ_random of Fig. 5's red curves: a fresh initialisation,
    # U(−1/√d, 1/√d) as torch.nn.Linear draws it.
    bound = 1.0 / math.sqrt(ga.dim)
    theta_init = jax.random.uniform(k_theta, (ga.dim,), minval=-bound,
                                    maxval=bound)
    forget_sets = {
        'poison': ForgetSet(x, y, n_corr, theta_corr, theta_target, v_poison,
                            p),
        'random': ForgetSet(x[keep], y[keep], n, task.theta_clean,
                            theta_rand_target, v_random, m)}
    jax.block_until_ready([theta_corr, theta_target, theta_rand_target,
                           theta_init])
    gc_start, gc_end = float(gc_start), float(gc_end)
  return AlignmentSetup(task, theta_low, theta_corr, gc_start, gc_end,
                        poison_shift['shift_l1'], forget_sets, theta_init,
                        k_gd, timing)


def _curve(values) -> list[float]:
  return [float(f'{v:.6g}') for v in np.asarray(values).tolist()]


def _summary(stats: dict, prefix: str) -> dict:
  """Per-run summaries of `convex.clean_gradient_descent`'s curves, and the
  curves themselves (6 significant digits) for the report's figure."""
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


def alignment_fields(config, s: AlignmentSetup, forget: str) -> dict:
  """A Fig. 5 row's measured fields: clean gradient descent from θ(S_corr)
  (blue, v = the desired shift) and from θ_random (red) towards the forget
  set's unlearning target, summarised (`_summary`).

  `seconds` / `compile_seconds` are this run's two descents;
  `setup_seconds` / `setup_compile_seconds` the seed's shared set-up."""
  ga = config.gradient_alignment
  f = s.forget_sets[forget]
  with jax.enable_x64(True):
    with sweep.timed() as timing:
      k_blue, k_red = jax.random.split(jax.random.fold_in(
          s.gd_key, FORGET_SETS.index(forget)))
      gd = functools.partial(convex.clean_gradient_descent, lr=ga.gd.lr,
                             steps=ga.gd.steps, batch_size=ga.gd.batch_size,
                             signal_dim=ga.signal_dim)
      _, blue = gd(k_blue, f.start, f.target, f.direction, f.x, f.y, ga.l2,
                   float(f.n_ref))
      _, red = gd(k_red, s.theta_init, f.target, s.theta_init - f.target,
                  f.x, f.y, ga.l2, float(f.n_ref))
      blue, red = jax.device_get((blue, red))
    return {
        'n_forget': int(f.n_forget), 'n': ga.n, 'dim': ga.dim,
        'signal_dim': ga.signal_dim, 'l2': ga.l2,
        **shift_stats(f.direction, ga.signal_dim),
        'poison_shift_l1': s.poison_shift_l1,
        'gc_loss_start': s.gc_loss_start, 'gc_loss_end': s.gc_loss_end,
        # θ(S_corr \ S_f): θ(S_clean) at n_ref = |S_corr| for the poisons.
        'test_mse_clean': s.task.test_mse(
            f.target if forget == 'poison' else s.task.theta_clean),
        'test_mse_corr': s.task.test_mse(s.theta_corr),
        'test_mse_low': s.task.test_mse(s.theta_low),
        **_summary(blue, ''), **_summary(red, 'red_'),
        'seconds': timing.seconds, 'compile_seconds': timing.compile_seconds,
        'setup_seconds': s.timing.seconds,
        'setup_compile_seconds': s.timing.compile_seconds}


def _alignment_group(config, seed: int) -> sweep.Group:
  base = alignment_setting(config)
  identity = {'study': STUDY, 'part': 'gradient_alignment', 'seed': seed,
              'setting_key': run_key(base)}

  def alignment_run(forget):
    return sweep.Run(
        run_key({**base, 'seed': seed, 'forget': forget}),
        f'Fig. 5 seed={seed} forget={forget}',
        lambda s: alignment_fields(config, s, forget),
        {**identity, 'forget': forget})

  return sweep.Group(f'Fig. 5 seed={seed}',
                     lambda: _alignment_setup(config, seed),
                     [alignment_run(forget) for forget in FORGET_SETS])
