"""Knowledge distillation from a bad teacher, BadT (Chundawat et al. 2023b;
Goel §3.2 (4), A.2 (4)).

The student starts from M_o and distils, sample by sample, from a randomly
initialised teacher on S_f and from M_o on the retain data, with the original
recipe for the budget (Goel: 1000 of 4000 steps). Defaults follow the
corrective-benchmark code: the unlearning set is the whole training set with
S_f flagged (`retain_share=1`; Chundawat's own code uses S_f plus 30% of the
retain set), and the KL is averaged over classes as well as samples
(PyTorch's `F.kl_div` default reduction, `kl_over_classes=True`), which
scales the loss by 1/C.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from unlearnjax import parallel
from unlearnjax import training
from unlearnjax.unlearn import distill
from unlearnjax.unlearn.base import Method, UnlearnTask, single


@dataclasses.dataclass(frozen=True)
class BadTeacherHparams:
  budget_fraction: float = 0.25
  retain_share: float = 1.0      # Chundawat: 0.3
  temperature: float = 1.0
  kl_over_classes: bool = True   # F.kl_div(reduction='mean'): KL / C


def unlearn(task: UnlearnTask, hparams: BadTeacherHparams, key: jax.Array):
  teacher_key, subset_key, order_key = jax.random.split(key, 3)
  rng = np.random.default_rng(
      np.asarray(jax.random.key_data(subset_key)).ravel().tolist())
  n_retain = max(1, int(round(hparams.retain_share * task.retain.size)))
  retain_rows = (task.retain if n_retain >= task.retain.size
                 else np.sort(rng.choice(task.retain, n_retain, replace=False)))
  rows = np.concatenate([task.forget, retain_rows])
  is_forget = np.arange(rows.size) < task.forget.size
  images, labels = task.train.images[rows], task.train.labels[rows]

  bad_teacher = training.init_variables(task.model, teacher_key,
                                        task.train.image_shape)
  competent = task.cached('original_logits', rows, lambda: (
      training.predict_logits(task.model, task.original, images)))
  incompetent = training.predict_logits(task.model, bad_teacher,
                                        images[is_forget])
  teacher_logits = competent.copy()
  teacher_logits[is_forget] = incompetent
  kl_weight = (1.0 / competent.shape[-1]) if hparams.kl_over_classes else 1.0

  recipe = task.recipe.scaled(hparams.budget_fraction)
  tx = training.make_optimizer(recipe)
  state = parallel.replicate(training.create_train_state(task.original, tx))
  source = distill.BatchSource(
      images, labels, teacher_logits, recipe.batch_size,
      np.random.default_rng(
          np.asarray(jax.random.key_data(order_key)).ravel().tolist()))
  step_fn = distill.jitted_distill_step(task.model, recipe, True)
  state, _ = training.run_steps(
      step_fn, state,
      lambda _: source.next(ce_weight=0.0, kl_weight=kl_weight,
                            temperature=hparams.temperature),
      recipe.steps, what='bad_teacher', curve=task.curve)
  return jax.device_get(state.variables)


METHOD = Method('bad_teacher', unlearn, BadTeacherHparams,
                single(BadTeacherHparams))
