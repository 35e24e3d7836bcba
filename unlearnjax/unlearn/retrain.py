"""Retrain without the deletion set, RewoD (Goel §3.2 (1), A.2 (1)).

Trains from scratch (or from the pretrained weights the original was
fine-tuned from, `task.initial`) on S_tr \\ S_f with the original recipe A:
the privacy gold standard, which leaves S_m \\ S_f in the data.
"""

from __future__ import annotations

import dataclasses

import jax

from unlearnjax import training
from unlearnjax.unlearn.base import Method, UnlearnTask, single


@dataclasses.dataclass(frozen=True)
class RetrainHparams:
  """None: RewoD is the original recipe A, all of its steps."""


def unlearn(task: UnlearnTask, hparams: RetrainHparams, key: jax.Array):
  del hparams
  return training.fit(task.model, task.recipe, task.train, key,
                      indices=task.retain, variables=task.initial,
                      what='retrain', curve=task.curve)


METHOD = Method('retrain', unlearn, RetrainHparams, single(RetrainHparams))
