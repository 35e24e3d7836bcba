"""PTN search for SSD-family unlearning (Potion §3.2, Alg. 1, eq. 7; SPEC.md).

SSD's dampening (Foster et al. eq. 3-4) with λ = 1 and the selection
threshold τ set by a search instead of a grid:

* ratios r_i = I_f,i / I_D,i over all parameters of all layers, NaN and ±inf
  dropped; τ(s) = the p-th percentile of r with p = 100 − ln(1 + 100·s);
* s starts at (|S_f|/|S_tr|)/b_start (the authors' code,
  `towards_poison_unlearning/src/methods.py`; the paper writes "· b_start",
  but larger s is more aggressive, so the code's start is the safe one) and
  grows by s ← s·s_step;
* the search stops at the first s whose dampened model's accuracy on S_f,
  against its given (poisoned) labels, is ≤ ρ × the original's; at most
  `max_tries` values. If none gets there, the last one tried is kept and the
  row says `reached_threshold=False`.

Any importance of `unlearnjax.importance` plugs in (SSD's Fisher, LF, XLF).

The defaults are the authors' code (`towards_poison_unlearning/src/utils.py:
alfssd_tuning` as `methods.XALFSSD` calls it; tested against it in
`tests/test_equiv_ssd.py`), which is what Potion's reported numbers measure:

* `estimator='per_batch'` over shuffled batches (`shuffle=True`) of the
  training batch size (`importance_batch_size=0`), as their loaders;
* `importance_data='retain'`: their `main.py` passes the retain loader as
  "D" (the Lipschitz pre-filter in `XALFSSD.unlearn` is `if False:`), so I_D
  is over D_r although Alg. 1 line 1 writes S_tr.

The library's own variant (`ptn_xlf_exact`, …): `estimator='exact'` and
`importance_data='train'`, Alg. 1 as written, whose I_D is computed once per
original model and serves every found fraction.

Two executions of the same search, which pick the same s: `vectorised=False`
tries one candidate per call, as Alg. 1's loop; `vectorised=True` dampens and
scores `candidates_per_call` candidates in one `vmap`ped call (Alg. 1 line 11:
"can be parallelised") and keeps the first that passes. `candidates_per_call
=0` (the default) lets `tuning.search_candidates` choose by device and model:
16 on an accelerator; on a CPU by the FLOPs of one sample's forward pass
(vmapping 16 dampened copies of Potion's 2.3M-parameter ResNet-9 is 7.8×
slower per candidate than one at a time on 2 cores, while the small CNN on
the digits scores 16 at once about 3× faster than one by one).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from unlearnjax import grads as grads_lib
from unlearnjax import importance as importance_lib
from unlearnjax import parallel
from unlearnjax import tuning
from unlearnjax.data.split import Split
from unlearnjax.training import Variables
from unlearnjax.unlearn import importances as importances_lib
from unlearnjax.unlearn.base import Method, UnlearnTask, Unlearned, single
from unlearnjax.unlearn.ssd import dampen


@dataclasses.dataclass(frozen=True)
class PTNHparams:
  """Potion §4.1 defaults: ρ = 0.2, b_start = 25, s_step = 1.1."""
  importance: str = 'xlf'              # 'fisher' (SSD), 'lf' or 'xlf'
  output_norm_power: float = 1.0       # XLF's w (eq. 4)
  estimator: str = 'per_batch'         # 'per_batch' (authors) or 'exact'
  importance_batch_size: int = 0       # 0: the training recipe's batch
  importance_data: str = 'retain'      # I_D over 'retain' (authors' code)
                                       # or 'train' (Alg. 1 line 1)
  shuffle: bool = True                 # per_batch: shuffled batches (authors)
  over_forgetting_buffer: float = 0.2  # ρ
  start_buffer: float = 25.0           # b_start
  step_multiplier: float = 1.1         # s_step
  max_tries: int = 500
  vectorised: bool = True
  candidates_per_call: int = 0         # 0: by device and model (tuning)
  eval_batch_size: int = 256           # rows of S_f per scoring call

  def __post_init__(self):
    importance_lib.get_importance(self.importance)
    if self.estimator not in importance_lib.ESTIMATORS:
      raise ValueError(f'PTN estimator must be one of '
                       f'{importance_lib.ESTIMATORS}, got {self.estimator!r}')
    if self.importance_batch_size < 0:
      raise ValueError('PTN importance_batch_size must be >= 0 (0: the '
                       f"recipe's batch), got {self.importance_batch_size}")
    if self.importance_data not in ('train', 'retain'):
      raise ValueError("importance_data must be 'train' or 'retain', got "
                       f'{self.importance_data!r}')
    if not 0 <= self.over_forgetting_buffer <= 1:
      raise ValueError('over_forgetting_buffer (ρ) must lie in [0, 1], got '
                       f'{self.over_forgetting_buffer}')
    if self.step_multiplier <= 1 or self.start_buffer <= 0:
      raise ValueError('PTN needs step_multiplier > 1 and start_buffer > 0')
    if self.max_tries < 1 or self.candidates_per_call < 0:
      raise ValueError('PTN needs max_tries >= 1 and candidates_per_call >= 0 '
                       '(0: chosen by device and model)')


@dataclasses.dataclass(frozen=True)
class SearchResult:
  """The candidate PTN picked and the trail that led to it."""
  params: object
  index: int                 # 0-based position of the pick in the s sequence
  strength: float            # s
  percentile: float          # p
  selection_threshold: float  # τ
  forget_accuracy: float
  original_forget_accuracy: float
  reached_threshold: bool
  candidates_scored: int
  candidates_per_call: int
  trail: list                # (s, τ, forget accuracy) of every scored candidate


def strengths(n_forget: int, n_train: int, hparams: PTNHparams) -> np.ndarray:
  """s_k = (|S_f|/|S_tr|)/b_start · s_step^k, k < max_tries."""
  start = n_forget / n_train / hparams.start_buffer
  return start * hparams.step_multiplier ** np.arange(hparams.max_tries)


def percentile_of_strength(strength) -> np.ndarray:
  """Potion eq. 7: p = 100 − ln(1 + 100·s), kept in [0, 100]."""
  return np.clip(100.0 - np.log1p(100.0 * np.asarray(strength, np.float64)),
                 0.0, 100.0)


def finite_ratios(importance_train, importance_forget) -> np.ndarray:
  """I_f/I_D of every parameter of every layer, NaN and ±inf dropped."""
  flat_train = np.concatenate(
      [np.ravel(x) for x in jax.tree.leaves(importance_train)])
  flat_forget = np.concatenate(
      [np.ravel(x) for x in jax.tree.leaves(importance_forget)])
  with np.errstate(divide='ignore', invalid='ignore'):
    ratios = flat_forget.astype(np.float64) / flat_train
  return ratios[np.isfinite(ratios)]


def thresholds(ratios: np.ndarray, strength_values) -> np.ndarray:
  """τ(s) = P_p(ratios) for every s (Potion eq. 7)."""
  if ratios.size == 0:
    raise ValueError('PTN: no finite importance ratio (I_f and I_D all 0?)')
  return np.percentile(ratios, percentile_of_strength(strength_values))


@functools.lru_cache(maxsize=32)
def _candidate_correct_fn(model: nn.Module) -> Callable:
  """(params, stats, I_D, I_f, τ (C,), x, y, mask) -> correct counts (D, C).

  Each device dampens the parameters for every candidate τ (vmap) and scores
  its own rows of S_f; the per-device counts come back without a collective
  (as `grads.mean_over_samples` does) and are summed on the host.
  """

  def local(params, batch_stats, i_train, i_forget, taus, x, y, mask):
    def one(tau):
      dampened = dampen(params, i_train, i_forget, tau, 1.0)
      logits = model.apply({'params': dampened, 'batch_stats': batch_stats},
                           x, train=False)
      return jnp.sum(mask * (jnp.argmax(logits, -1) == y))
    return jax.vmap(one)(taus)[None]

  data = P(parallel.DATA_AXIS)
  return jax.jit(jax.shard_map(
      local, mesh=parallel.data_mesh(),
      in_specs=(P(), P(), P(), P(), P(), data, data, data), out_specs=data,
      check_vma=False))


def candidate_scorer(model: nn.Module, original: Variables, importance_train,
                     importance_forget, forget: Split,
                     eval_batch_size: int = 256) -> Callable:
  """`thresholds -> accuracies` on `forget` (its own labels) of the
  SSD-dampened model (λ = 1), every threshold of a call in one vmapped call
  per chunk of S_f.

  The parameters, importances and S_f go to the devices once, here; each
  call then moves only the thresholds (the search calls it up to
  `max_tries` times).
  """
  fn = _candidate_correct_fn(model)
  state = parallel.replicate((original['params'], original['batch_stats'],
                              importance_train, importance_forget))
  n = len(forget)
  chunks = [parallel.shard_batch((x, y, mask))
            for (x, y), mask in grads_lib.padded_chunks(
                (forget.images, forget.labels),
                parallel.shape_bucket(n, eval_batch_size))]

  def accuracies(selection_thresholds) -> np.ndarray:
    taus = parallel.replicate(jnp.asarray(selection_thresholds, jnp.float32))
    counts = [fn(*state, taus, *chunk) for chunk in chunks]
    correct = sum(np.asarray(parallel.gather_to_host(c)).sum(axis=0)
                  for c in counts)
    return correct / n

  return accuracies


def candidate_accuracies(model: nn.Module, original: Variables,
                         importance_train, importance_forget,
                         selection_thresholds: np.ndarray, forget: Split,
                         eval_batch_size: int = 256) -> np.ndarray:
  """One call of `candidate_scorer`: accuracies for `selection_thresholds`."""
  return candidate_scorer(model, original, importance_train,
                          importance_forget, forget, eval_batch_size)(
                              selection_thresholds)


def search(model: nn.Module, original: Variables, importance_train,
           importance_forget, forget: Split, n_train: int,
           hparams: PTNHparams) -> SearchResult:
  """Potion Alg. 1 lines 3-12 given the two importances."""
  ratios = finite_ratios(importance_train, importance_forget)
  s_values = strengths(len(forget), n_train, hparams)
  taus = thresholds(ratios, s_values)
  score = candidate_scorer(model, original, importance_train,
                           importance_forget, forget, hparams.eval_batch_size)
  # The original's accuracy on S_f (α = ∞: nothing dampened).
  original_accuracy = float(score(np.array([np.inf]))[0])
  target = hparams.over_forgetting_buffer * original_accuracy
  per_call = 1
  if hparams.vectorised:
    per_call = hparams.candidates_per_call or tuning.search_candidates(
        model, original, forget.image_shape)
  trail, pick = [], None
  for start in range(0, len(s_values), per_call):
    chunk = taus[start:start + per_call]
    if len(chunk) < per_call:  # one compiled shape for every call
      chunk = np.concatenate([chunk, np.full(per_call - len(chunk), chunk[-1])])
    accs = score(chunk)
    for k in range(min(per_call, len(s_values) - start)):
      trail.append((float(s_values[start + k]), float(taus[start + k]),
                    float(accs[k])))
      if pick is None and accs[k] <= target + 1e-12:
        pick = start + k
    if pick is not None:
      break
  reached = pick is not None
  if pick is None:
    pick = len(s_values) - 1
  params = dampen(original['params'], importance_train, importance_forget,
                  float(taus[pick]), 1.0)
  return SearchResult(
      params=jax.device_get(params), index=pick,
      strength=float(s_values[pick]),
      percentile=float(percentile_of_strength(s_values[pick])),
      selection_threshold=float(taus[pick]),
      forget_accuracy=trail[pick][2], original_forget_accuracy=original_accuracy,
      reached_threshold=reached, candidates_scored=len(trail),
      candidates_per_call=per_call, trail=trail)


def importance_batch_size(task: UnlearnTask, hparams: PTNHparams) -> int:
  """The per-batch estimate's batch: the hparam, or the recipe's if 0."""
  return hparams.importance_batch_size or task.recipe.batch_size


def timed_importances(task: UnlearnTask, hparams: PTNHparams,
                      key: jax.Array | None = None):
  """(I_D, I_f) as `importances.Timed`, memoised in the task's cache
  (`unlearn.importances`): I_D over S_tr is computed once per original model
  (and importance settings), and with the exact estimator I_D over D_r is
  derived from that one pass for every found fraction.

  `key` shuffles the per-batch estimate's rows (with `hparams.shuffle`)."""
  shuffled = hparams.estimator == 'per_batch' and hparams.shuffle
  return importances_lib.task_importances(
      task, importance=hparams.importance, estimator=hparams.estimator,
      batch_size=importance_batch_size(task, hparams),
      data=hparams.importance_data,
      output_norm_power=hparams.output_norm_power,
      shuffle_key=key if shuffled else None)


def importances(task: UnlearnTask, hparams: PTNHparams,
                key: jax.Array | None = None):
  """((I_D, seconds), (I_f, seconds)) of `timed_importances`; `seconds` is
  what computing each took, the same on a cache hit."""
  i_train, i_forget = timed_importances(task, hparams, key)
  return (i_train.value, i_train.seconds), (i_forget.value, i_forget.seconds)


def unlearn(task: UnlearnTask, hparams: PTNHparams, key: jax.Array):
  """Potion Alg. 1; `key` only shuffles the per-batch importances' rows."""
  timed_train, timed_forget = timed_importances(task, hparams, key)
  i_train, train_seconds = timed_train.value, timed_train.seconds
  i_forget, forget_seconds = timed_forget.value, timed_forget.seconds
  start = time.perf_counter()
  result = search(task.model, task.original, i_train, i_forget,
                  task.forget_split, len(task.train), hparams)
  search_seconds = time.perf_counter() - start
  changed = sum(int(np.sum(np.asarray(a) != np.asarray(b))) for a, b in zip(
      jax.tree.leaves(result.params), jax.tree.leaves(task.original['params'])))
  total = sum(int(np.size(a)) for a in jax.tree.leaves(result.params))
  info = {
      'ptn_strength': result.strength, 'ptn_percentile': result.percentile,
      'ptn_selection_threshold': result.selection_threshold,
      'ptn_tries': result.index + 1,
      'ptn_candidates_scored': result.candidates_scored,
      'ptn_candidates_per_call': result.candidates_per_call,
      'ptn_reached_threshold': result.reached_threshold,
      'forget_accuracy': result.forget_accuracy,
      'original_forget_accuracy': result.original_forget_accuracy,
      'dampened_share': changed / total,
      'importance_train_seconds': train_seconds,
      'importance_forget_seconds': forget_seconds,
      'search_seconds': search_seconds,
      # What this run spent on importances (0 for what an earlier run of the
      # same M_o computed), and whether I_D came from the shared S_tr pass.
      'importance_spent_seconds': timed_train.spent + timed_forget.spent,
      'importance_shared': (timed_train.shared
                            or hparams.importance_data == 'train'),
  }
  if hparams.estimator == 'per_batch':
    info['importance_batch_size_used'] = importance_batch_size(task, hparams)
  if not math.isfinite(result.selection_threshold):
    raise FloatingPointError('PTN picked a non-finite threshold')
  return Unlearned({'params': result.params,
                    'batch_stats': task.original['batch_stats']}, info)


# The library's variant: per-sample importances, I_D over S_tr (Alg. 1).
EXACT = (('estimator', 'exact'), ('importance_data', 'train'))


def method(name: str, importance: str, defaults: tuple = ()) -> Method:
  """PTN + the named importance, as a registry entry; `defaults` ((field,
  value) pairs, e.g. `EXACT`) change other defaults."""
  hparams_cls = _with_default(importance, tuple(defaults))
  return Method(name, unlearn, hparams_cls, single(hparams_cls))


@functools.lru_cache(maxsize=None)
def _with_default(importance: str, defaults: tuple = ()) -> type:
  """A PTNHparams subclass whose `importance` defaults to `importance`."""
  suffix = ''.join(f'_{v}' for _, v in defaults)
  return dataclasses.make_dataclass(
      f'PTN_{importance}{suffix}_Hparams',
      [('importance', str, dataclasses.field(default=importance))]
      + [(f, type(v), dataclasses.field(default=v)) for f, v in defaults],
      bases=(PTNHparams,), frozen=True)
