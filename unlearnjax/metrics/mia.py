"""Membership inference and output-entropy metrics (SPEC.md, Metrics "MIA",
"Entropy of outputs on `forget`").

* `retain_test_attack` (RELOAD §4.2, "the inference attack from Shokri et
  al."; the code RELOAD's baselines share, Kurmanji/Foster
  `get_membership_attack_prob`): a logistic regression on per-sample features
  of one model's outputs (default: the entropy of the softmax, as that code),
  fitted to tell retain samples (members, 1) from test samples
  (non-members, 0), applied to the forget set. MIA = the share of forget
  predicted member; also the AUC of its score, forget against test.
* `fit_output_attack` / `output_attack_roc` (PGU §4, read-out (iv)): a
  classifier on model outputs on the forget set (here the sorted softmax
  vector, on a log scale), fitted on outputs of models trained WITH the
  forget set (1) and WITHOUT it (0); the ROC and AUC of its scores on an
  evaluated model's forget outputs (positives) against held-out retrained
  models' (negatives): 0.5 = indistinguishable from retraining. PGU fits
  XGBoost on 40 + 40 models; the classifier here is logistic regression (no
  new dependency).
* `output_entropy`, `entropy_histogram` (PGU Figs. 1, 3, 5).

The logistic regression is sklearn's default binary objective,
½‖w‖² + C Σ_i s_i · log-loss_i (intercept unpenalised, C = 1,
`class_weight='balanced'`: s_i = n / (2 n_class)), solved by Newton's method
in float64 on the host; AUC is the exact rank statistic (Mann-Whitney U,
ties count ½).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from unlearnjax import training
from unlearnjax.data.split import Split

ATTACK_FEATURES = ('entropy', 'loss')


# ----------------------------------------------------------------------------
# Output entropy (PGU figs.)
# ----------------------------------------------------------------------------


@jax.jit
def _entropy(logits):
  log_p = jax.nn.log_softmax(logits, axis=-1)
  p = jnp.exp(log_p)
  # 0 · log 0 = 0 (a −inf logit), as Foster's `entropy` uses torch.where.
  return -jnp.sum(jnp.where(p > 0, p * log_p, 0.0), axis=-1)


def output_entropy(logits) -> jax.Array:
  """H(softmax(logits)) per sample, in nats: logits (N, C) -> (N,)."""
  logits = jnp.asarray(logits)
  if logits.ndim != 2 or logits.shape[-1] < 1:
    raise ValueError(f'logits must be (N, C), got shape {logits.shape}')
  return _entropy(logits)


def entropy_histogram(logits, *, bins=20, value_range=None,
                      log_entropy: bool = False, floor: float = 1e-12):
  """(counts, edges) of the entropy of every row of `logits` (PGU Figs. 1, 3:
  entropy; Fig. 5: log-entropy).

  Default range: [0, ln C] for the entropy (so models share bins; values are
  clipped into it against rounding), [ln floor, ln ln C] for the
  log-entropy (entropies below `floor` counted in the first bin). `bins`
  may be explicit edges, as in `np.histogram`.
  """
  logits = np.asarray(logits)
  entropy = np.asarray(output_entropy(logits), np.float64)
  upper = float(np.log(logits.shape[-1]))
  if log_entropy:
    values = np.log(np.maximum(entropy, floor))
    default = (float(np.log(floor)), float(np.log(max(upper, floor))))
  else:
    values = entropy
    default = (0.0, upper)
  if value_range is None and np.ndim(bins) == 0:
    value_range = default
    values = np.clip(values, *value_range)
  return np.histogram(values, bins=bins, range=value_range)


# ----------------------------------------------------------------------------
# ROC and AUC
# ----------------------------------------------------------------------------


def _scores(x, what: str) -> np.ndarray:
  x = np.asarray(x, np.float64).ravel()
  if x.size == 0:
    raise ValueError(f'{what}: no scores')
  if not np.all(np.isfinite(x)):
    raise ValueError(f'{what}: scores hold NaN or inf')
  return x


def _average_ranks(x: np.ndarray) -> np.ndarray:
  """1-based ranks, tied values sharing the mean of their ranks."""
  order = np.argsort(x, kind='stable')
  sorted_x = x[order]
  starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
  ends = np.r_[starts[1:], x.size]
  mean_rank = (starts + ends + 1) / 2.0        # mean of start+1 … end
  ranks = np.empty(x.size)
  ranks[order] = np.repeat(mean_rank, ends - starts)
  return ranks


def auc(member_scores, nonmember_scores) -> float:
  """P(s_member > s_nonmember) + ½ P(=): the area under the ROC of the test
  "member iff score > τ", by the rank statistic (exact, ties ½)."""
  pos = _scores(member_scores, 'auc (members)')
  neg = _scores(nonmember_scores, 'auc (non-members)')
  ranks = _average_ranks(np.concatenate([pos, neg]))
  u = ranks[:pos.size].sum() - pos.size * (pos.size + 1) / 2.0
  return float(u / (pos.size * neg.size))


def roc_curve(member_scores, nonmember_scores
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(fpr, tpr, thresholds) of "member iff score >= τ" for every distinct
  score τ (descending), starting at τ = +inf (0, 0) and ending at (1, 1).
  The trapezoidal area under it equals `auc`."""
  pos = _scores(member_scores, 'roc_curve (members)')
  neg = _scores(nonmember_scores, 'roc_curve (non-members)')
  thresholds = np.unique(np.concatenate([pos, neg]))[::-1]
  pos_sorted, neg_sorted = np.sort(pos), np.sort(neg)
  tp = pos.size - np.searchsorted(pos_sorted, thresholds, side='left')
  fp = neg.size - np.searchsorted(neg_sorted, thresholds, side='left')
  return (np.r_[0.0, fp / neg.size], np.r_[0.0, tp / pos.size],
          np.r_[np.inf, thresholds])


# ----------------------------------------------------------------------------
# Logistic-regression attack
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LogisticAttack:
  """A fitted binary logistic regression: P(member | x) = σ(x·w + b)."""
  coef: np.ndarray       # (D,)
  intercept: float

  def decision(self, features) -> np.ndarray:
    x = _features(features, self.coef.size)
    return x @ self.coef + self.intercept

  def member_probability(self, features) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-self.decision(features)))

  def predict(self, features) -> np.ndarray:
    """1 (member) where P > ½, as sklearn's `predict`."""
    return (self.decision(features) > 0).astype(np.int32)

  def accuracy(self, member_features, nonmember_features) -> float:
    """Share classified correctly over both sets pooled."""
    hits = (np.sum(self.predict(member_features) == 1)
            + np.sum(self.predict(nonmember_features) == 0))
    return float(hits / (len(member_features) + len(nonmember_features)))


def _features(x, dim: int | None = None) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim == 1:
    x = x[:, None]
  if x.ndim != 2:
    raise ValueError(f'features must be (N,) or (N, D), got shape {x.shape}')
  if dim is not None and x.shape[1] != dim:
    raise ValueError(f'features have {x.shape[1]} columns; the attack was '
                     f'fitted on {dim}')
  if not np.all(np.isfinite(x)):
    raise ValueError('features hold NaN or inf')
  return x


def fit_logistic_attack(member_features, nonmember_features, *,
                        inverse_regularization: float = 1.0,
                        balanced: bool = True, max_iter: int = 100,
                        tol: float = 1e-10) -> LogisticAttack:
  """L2-regularised logistic regression, members = 1 (sklearn's default
  binary `LogisticRegression(C=inverse_regularization,
  class_weight='balanced')`), by damped Newton steps.

  Args:
    member_features, nonmember_features: (N, D) or (N,) arrays.
    balanced: weight each class by n / (2 n_class) (Kurmanji/Foster's MIA).
  """
  members = _features(member_features)
  others = _features(nonmember_features, members.shape[1])
  if len(members) == 0 or len(others) == 0:
    raise ValueError('fit_logistic_attack needs members and non-members')
  if not inverse_regularization > 0:
    raise ValueError('inverse_regularization must be positive, got '
                     f'{inverse_regularization}')
  x = np.concatenate([members, others])
  y = np.r_[np.ones(len(members)), np.zeros(len(others))]
  n = len(y)
  weight = np.where(y == 1, n / (2.0 * len(members)), n / (2.0 * len(others))
                    ) if balanced else np.ones(n)
  c = float(inverse_regularization)
  design = np.c_[x, np.ones(n)]                 # last column: intercept
  penalty = np.r_[np.ones(x.shape[1]), 0.0]

  def objective(theta):
    z = design @ theta
    return (0.5 * np.sum(penalty * theta**2)
            + c * np.sum(weight * (np.logaddexp(0.0, z) - y * z)))

  theta = np.zeros(design.shape[1])
  value = objective(theta)
  for _ in range(max_iter):
    p = 1.0 / (1.0 + np.exp(-(design @ theta)))
    grad = penalty * theta + c * design.T @ (weight * (p - y))
    if np.max(np.abs(grad)) < tol * max(1.0, n):
      break
    hessian = (np.diag(penalty)
               + c * (design * (weight * p * (1 - p))[:, None]).T @ design)
    hessian += 1e-12 * np.eye(len(theta))
    step = np.linalg.solve(hessian, grad)
    scale = 1.0
    while scale > 1e-10:                        # backtracking line search
      candidate = theta - scale * step
      candidate_value = objective(candidate)
      if candidate_value <= value:
        break
      scale *= 0.5
    else:
      break
    if value - candidate_value <= 1e-15 * max(1.0, abs(value)):
      theta, value = candidate, candidate_value
      break
    theta, value = candidate, candidate_value
  return LogisticAttack(coef=theta[:-1].copy(), intercept=float(theta[-1]))


# ----------------------------------------------------------------------------
# (a) RELOAD §4.2: retain (members) vs test (non-members), applied to forget
# ----------------------------------------------------------------------------


def loss_entropy_features(logits, labels=None,
                          features: Sequence[str] = ('entropy',)
                          ) -> np.ndarray:
  """(N, len(features)) per-sample attack features from logits: 'entropy'
  of the softmax and/or the cross-entropy 'loss' against `labels`."""
  features = tuple(features)
  if not features or any(f not in ATTACK_FEATURES for f in features):
    raise ValueError(f'features must be a non-empty subset of '
                     f'{ATTACK_FEATURES}, got {features}')
  logits = np.asarray(logits, np.float32)
  if logits.ndim != 2:
    raise ValueError(f'logits must be (N, C), got shape {logits.shape}')
  columns = []
  for name in features:
    if name == 'entropy':
      columns.append(np.asarray(output_entropy(logits), np.float64))
    else:
      if labels is None:
        raise ValueError("the 'loss' feature needs labels")
      labels = np.asarray(labels, np.int64)
      if labels.shape != (logits.shape[0],):
        raise ValueError(f'labels shape {labels.shape} does not match '
                         f'{logits.shape[0]} logits')
      log_p = np.asarray(jax.nn.log_softmax(logits, axis=-1), np.float64)
      columns.append(-log_p[np.arange(len(labels)), labels])
  return np.stack(columns, axis=1)


@dataclasses.dataclass(frozen=True)
class RetainTestMIA:
  """Result of `retain_test_attack`.

  Attributes:
    mia: share of the forget set the attack predicts member (RELOAD's FMIA;
      the code's `results.mean()`).
    forget_auc: AUC of the attack's score, forget (as members) against test.
    attack_auc: AUC on the data it was fitted on (retain against test).
    attack_accuracy: its balanced-data accuracy there (retain vs test).
    attack: the fitted regression.
  """
  mia: float
  forget_auc: float
  attack_auc: float
  attack_accuracy: float
  attack: LogisticAttack


def retain_test_attack(retain_logits, test_logits, forget_logits, *,
                       retain_labels=None, test_labels=None,
                       forget_labels=None,
                       features: Sequence[str] = ('entropy',),
                       inverse_regularization: float = 1.0) -> RetainTestMIA:
  """RELOAD §4.2's MIA on one model's logits (see the module docstring)."""
  retain = loss_entropy_features(retain_logits, retain_labels, features)
  test = loss_entropy_features(test_logits, test_labels, features)
  forget = loss_entropy_features(forget_logits, forget_labels, features)
  if len(forget) == 0:
    raise ValueError('retain_test_attack: the forget set is empty')
  attack = fit_logistic_attack(retain, test,
                               inverse_regularization=inverse_regularization)
  return RetainTestMIA(
      mia=float(np.mean(attack.predict(forget))),
      forget_auc=auc(attack.decision(forget), attack.decision(test)),
      attack_auc=auc(attack.decision(retain), attack.decision(test)),
      attack_accuracy=attack.accuracy(retain, test),
      attack=attack)


def model_retain_test_attack(model, variables, retain: Split, test: Split,
                             forget: Split, *,
                             features: Sequence[str] = ('entropy',),
                             batch_size: int = 1024) -> RetainTestMIA:
  """`retain_test_attack` on a model's evaluation-mode logits."""
  def logits(split):
    return training.predict_logits(model, variables, split.images, batch_size)
  return retain_test_attack(
      logits(retain), logits(test), logits(forget),
      retain_labels=retain.labels, test_labels=test.labels,
      forget_labels=forget.labels, features=features)


# ----------------------------------------------------------------------------
# (b) PGU §4: outputs of models trained with vs without the forget set
# ----------------------------------------------------------------------------


def output_features(logits, *, log_scale: bool = True) -> np.ndarray:
  """The softmax vector sorted in descending order, per sample: (N, C); with
  `log_scale`, its logarithm (the sorted log-softmax).

  PGU's XGBoost is invariant to a monotone map of each feature, so the log
  scale hands a tree model the same information; a linear classifier needs
  it: on the tiny digits CNN the probabilities of confident models all sit
  near (1, 0, …) and the L2-regularised fit on them was at chance.
  """
  logits = jnp.asarray(logits)
  if logits.ndim != 2:
    raise ValueError(f'logits must be (N, C), got shape {logits.shape}')
  if log_scale:
    values = np.asarray(jax.nn.log_softmax(logits, axis=-1), np.float64)
  else:
    values = np.asarray(jax.nn.softmax(logits, axis=-1), np.float64)
  return -np.sort(-values, axis=-1)


def _stack_outputs(logits_per_model, what: str, log_scale: bool
                   ) -> np.ndarray:
  ndim = getattr(logits_per_model, 'ndim', None)   # an array, not a list
  if ndim == 2:
    logits_per_model = [logits_per_model]
  elif ndim == 3:                                   # (models, N, C)
    logits_per_model = list(logits_per_model)
  arrays = [output_features(x, log_scale=log_scale) for x in logits_per_model]
  if not arrays:
    raise ValueError(f'{what}: no models')
  return np.concatenate(arrays)


@dataclasses.dataclass(frozen=True)
class OutputAttack:
  """PGU's attack: a classifier on sorted (log-)softmax outputs."""
  classifier: LogisticAttack
  log_scale: bool = True

  def scores(self, logits_per_model) -> np.ndarray:
    """Member scores (logits of P(member)) of every output row of one model
    (N, C) or of several (a list, or (M, N, C))."""
    return self.classifier.decision(
        _stack_outputs(logits_per_model, 'OutputAttack.scores',
                       self.log_scale))


def fit_output_attack(with_forget_logits, without_forget_logits, *,
                      log_scale: bool = True,
                      inverse_regularization: float = 1.0) -> OutputAttack:
  """PGU §4 (iv): logistic regression on sorted softmax outputs on the forget
  set; members (1) from models trained with it, non-members (0) from models
  trained without it (PGU: 40 + 40 models, XGBoost). Each argument: one
  (N, C) array, a list of them or an (M, N, C) array, one per model."""
  return OutputAttack(fit_logistic_attack(
      _stack_outputs(with_forget_logits, 'fit_output_attack (with)',
                     log_scale),
      _stack_outputs(without_forget_logits, 'fit_output_attack (without)',
                     log_scale),
      inverse_regularization=inverse_regularization), log_scale)


@dataclasses.dataclass(frozen=True)
class AttackROC:
  fpr: np.ndarray
  tpr: np.ndarray
  thresholds: np.ndarray
  auc: float


def output_attack_roc(attack: OutputAttack, evaluated_logits,
                      reference_logits) -> AttackROC:
  """ROC/AUC of `attack`'s score on the evaluated model's forget outputs
  (positives) against held-out models trained without the forget set
  (negatives; one array or a list), PGU Figs. 2, 3d, 6: 0.64 for its
  original model, 0.53 after unlearning, 0.5 = indistinguishable from
  retraining."""
  pos = attack.scores(evaluated_logits)
  neg = attack.scores(reference_logits)
  fpr, tpr, thresholds = roc_curve(pos, neg)
  return AttackROC(fpr, tpr, thresholds, auc(pos, neg))
