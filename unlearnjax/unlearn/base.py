"""The one task object every method receives, and the method interface.

A method is `unlearn(task, hparams, key) -> Variables`, a frozen hparams
dataclass and a search grid `grid(task) -> list[hparams]` (DESIGN.md).
Adding one is one new file plus one line in `registry.py`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import numpy as np

from unlearnjax.data.split import Split
from unlearnjax.training import Recipe, Variables


@dataclasses.dataclass(frozen=True, eq=False)
class UnlearnTask:
  """Everything a method may read; methods never reach for globals.

  Attributes:
    model: the linen classifier.
    original: M_o's variables ({'params', 'batch_stats'}).
    train: S_tr as the model saw it (manipulated samples included).
    forget: sorted rows of `train` in S_f (must be non-empty).
    retain: sorted rows of `train` not in S_f (still holds S_m \\ S_f).
    validation: clean held-out split for every selection step.
    recipe: the original training recipe (Retrain and Finetune reuse it).
    cache: memo shared by tasks on the same original model (e.g. the
      training-set importances), keyed by `cache_key`.
    initial: where the original's training started: None for a random
      initialisation, or the pretrained variables it was fine-tuned from
      (Potion §4.2); Retrain starts there too.
    corrected: None, or the corrected versions of the `forget` rows (same
      order: clean inputs and correct labels), for remedial learning
      (RELOAD §4.3: D_new = retain ∪ corrected).
    curve: None, or the `curves.Curve` that records this run's steps; a
      step-based method passes it to `training.run_steps`/`fit` (it only
      observes: the result is the same without it).
  """
  model: nn.Module
  original: Variables
  train: Split
  forget: np.ndarray
  retain: np.ndarray
  validation: Split
  recipe: Recipe
  cache: dict = dataclasses.field(default_factory=dict)
  initial: Variables | None = None
  corrected: Split | None = None
  curve: Any = None  # curves.Curve | None

  def __post_init__(self):
    forget = np.asarray(self.forget, np.int64)
    retain = np.asarray(self.retain, np.int64)
    if forget.size == 0:
      raise ValueError('The forget set is empty: give at least one identified '
                       'sample (found_fraction > 0 or one-shot).')
    if np.intersect1d(forget, retain).size:
      raise ValueError('forget and retain overlap')
    if forget.min() < 0 or forget.max() >= len(self.train):
      raise ValueError('forget holds rows outside the training set')
    if self.corrected is not None and len(self.corrected) != forget.size:
      raise ValueError(f'corrected holds {len(self.corrected)} rows; it must '
                       f'hold one per forget row ({forget.size})')
    object.__setattr__(self, 'forget', forget)
    object.__setattr__(self, 'retain', retain)

  @property
  def forget_split(self) -> Split:
    return self.train.subset(self.forget)

  @property
  def retain_split(self) -> Split:
    return self.train.subset(self.retain)

  def cached(self, name: str, rows: np.ndarray | None, compute: Callable[[], Any]):
    """Memoises `compute()` under (name, rows) in the shared cache."""
    key = cache_key(name, rows)
    if key not in self.cache:
      self.cache[key] = compute()
    return self.cache[key]


def cache_key(name: str, rows: np.ndarray | None) -> str:
  digest = 'all' if rows is None else hashlib.sha1(
      np.asarray(rows, np.int64).tobytes()).hexdigest()[:16]
  return f'{name}/{digest}'


@dataclasses.dataclass(frozen=True)
class Unlearned:
  """What `unlearn` may return instead of bare variables: the unlearned
  variables and what the method measured on its way (e.g. the threshold a
  search picked, its timings); studies copy `info` into the results row."""
  variables: Variables
  info: dict


def as_unlearned(output) -> Unlearned:
  """`Unlearned` from either return form of `Method.unlearn`."""
  return output if isinstance(output, Unlearned) else Unlearned(output, {})


@dataclasses.dataclass(frozen=True)
class Method:
  """A registered unlearning method.

  Attributes:
    name: registry name.
    unlearn: `(task, hparams, key) -> Variables | Unlearned`, the unlearned
      model (with what the method measured, if it returns `Unlearned`).
    hparams: the frozen hparams dataclass (its defaults are the method's).
    grid: `task -> sequence of hparams` to search with the Goel score; a
      single-element grid means no search.
    label: how figures and tables name it (default: the name).
    reads_corrected: whether it uses `task.corrected` (remedial learning,
      RELOAD §4.3); studies give the corrected rows only to such methods.
    unlearn_many: None, or `(task, [hparams], key) -> [Variables |
      Unlearned | FloatingPointError]`, every configuration of a grid run
      together (`training.many_step`; issue 10) and equal to `unlearn` for
      each (a test says so); `selection` uses it for grids.
  """
  name: str
  unlearn: Callable[[UnlearnTask, Any, jax.Array], Any]
  hparams: type
  grid: Callable[[UnlearnTask], Sequence[Any]]
  label: str | None = None
  reads_corrected: bool = False
  unlearn_many: Callable[[UnlearnTask, Sequence[Any], jax.Array],
                         list] | None = None

  @property
  def takes_budget(self) -> bool:
    """Whether it trains for a share of the original steps (its hparams
    have `budget_fraction`, which a study's budget sets)."""
    return any(f.name == 'budget_fraction'
               for f in dataclasses.fields(self.hparams))

  @property
  def display_name(self) -> str:
    return self.label or self.name


def single(hparams_cls) -> Callable[[UnlearnTask], Sequence[Any]]:
  """A grid of just the defaults."""
  return lambda task: [hparams_cls()]
