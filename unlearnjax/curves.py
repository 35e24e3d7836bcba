"""Per-step curves of training and unlearning runs.

A `Curve` is what `training.run_steps` (and so `training.fit` and every
step-based method, through `UnlearnTask.curve`) takes to record a run while
it runs: every step loop records, every `every` steps and at its last step,
the step's own training metrics (`train/loss`, `train/accuracy`, … as the
step function returns them) and `evaluate(variables)` (`forget/accuracy` on
S_f, `validation/accuracy` on the clean validation split); a loop that
starts a run (`start` 0) also evaluates its first variables, at step 0. A curve only
observes: the run's variables are bit-identical with and without one, and
the time its points take is left out of every enclosing `sweep.timed`.

Points go to two places (`Writer`):
- TensorBoard event files (tensorboardX, no TensorFlow) in
  `<workdir>/tensorboard/<study>/<run name>/`: `tensorboard --logdir=WORKDIR`;
- JSON lines in `<workdir>/curves/<run name>.jsonl` (one point a line:
  `{"step": s, "<tag>": value, …}`), which the reports draw
  (`reports.base.curves_figure`) without the tensorboard package. A run
  name `<run>/<method>` is one method of the study's one curve run.

A run's files are written under a partial name and completed when it
finishes (`recording`); a finished run's curve is never rewritten, a killed
run's partial curve is replaced (from the step a resumed `fit` restarts at).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import numpy as np

from unlearnjax import sweep
from unlearnjax import training

FORGET, VALIDATION, LOSS = 'forget/accuracy', 'validation/accuracy', 'train/loss'


def jsonl_path(workdir: str, run_name: str) -> str:
  return os.path.join(workdir, 'curves', run_name + '.jsonl')


def tensorboard_dir(workdir: str, study: str, run_name: str) -> str:
  return os.path.join(workdir, 'tensorboard', study, run_name)


def done(workdir: str, run_name: str) -> bool:
  """Whether the run's curve is complete (a rerun leaves it as it is)."""
  return os.path.exists(jsonl_path(workdir, run_name))


class Writer:
  """One run's points: tensorboardX events and JSON lines (module doc).

  Opened at the first point: a fresh run (`start` 0) replaces what a killed
  run left; a resumed one (`start` > 0, `fit` from its checkpoint) keeps
  that run's points up to `start`. `close` completes the curve. Only
  process 0 writes.
  """

  def __init__(self, workdir: str, study: str, run_name: str):
    self.path = jsonl_path(workdir, run_name)
    self.partial = self.path + '.partial'
    self.logdir = tensorboard_dir(workdir, study, run_name)
    self.points = 0
    self._events = None
    self._lines = None
    self._writes = jax.process_index() == 0

  def _open(self, start: int) -> None:
    import tensorboardX  # pylint: disable=g-import-not-at-top
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    kept = []
    if start > 0 and os.path.exists(self.partial):
      with open(self.partial) as f:
        kept = [line for line in f if json.loads(line)['step'] <= start]
    if start == 0:
      shutil.rmtree(self.logdir, ignore_errors=True)
    self._lines = open(self.partial, 'w')
    self._lines.writelines(kept)
    # purge_step: TensorBoard drops a killed run's events from that step on.
    # (A resumed run's file must not take the killed one's name, which has
    # only the second in it.)
    self._events = tensorboardX.SummaryWriter(
        self.logdir, purge_step=start + 1 if start > 0 else None,
        filename_suffix=f'.{time.time_ns()}')

  def write(self, step: int, values: Mapping[str, float], start: int = 0
            ) -> None:
    if not self._writes:
      return
    if self._lines is None:
      self._open(start)
    for tag, value in values.items():
      self._events.add_scalar(tag, value, step)
    self._lines.write(json.dumps({'step': step, **values}) + '\n')
    self._lines.flush()
    self.points += 1

  def flush(self) -> None:
    if self._events is not None:
      self._events.flush()

  def close(self, complete: bool = True) -> None:
    """Closes the files; `complete` renames the partial curve to its final
    name (nothing is written for a run that recorded no point)."""
    if self._lines is None:
      return
    self._events.close()
    self._lines.close()
    self._events = self._lines = None
    if complete:
      os.replace(self.partial, self.path)


@dataclasses.dataclass(frozen=True)
class Curve:
  """What a step loop records into (module doc).

  Attributes:
    writer: where the points go (`Writer`, or anything with `write(step,
      values, start)` and `flush()`).
    every: a point every `every` steps (and at a loop's last step).
    evaluate: `variables -> {tag: value}` (`evaluator`).
    start: the steps done before this loop (`fit`'s checkpoint segments and
      resumed runs); a point's step is `start` + the loop's step.
  """
  writer: Any
  every: int
  evaluate: Callable[[training.Variables], Mapping[str, float]]
  start: int = 0

  def __post_init__(self):
    if self.every < 1:
      raise ValueError(f'curve every={self.every}: need >= 1 steps')

  def after(self, steps: int) -> 'Curve':
    """The same curve for a loop that starts `steps` later."""
    return dataclasses.replace(self, start=self.start + steps)

  def due(self, step: int, steps: int) -> bool:
    """Whether the loop's `step` (1-based, of `steps`) gets a point."""
    return (self.start + step) % self.every == 0 or step == steps

  def record(self, step: int, metrics: Mapping[str, Any], variables) -> None:
    """The point at the loop's `step`: the step's `metrics` and the
    evaluation of `variables`, untimed (`sweep.untimed`). Fetching the
    metrics waits for the queued steps, which stays timed."""
    metrics = jax.device_get(dict(metrics))
    with sweep.untimed():
      values = {f'train/{k}': _scalar(v) for k, v in metrics.items()
                if np.ndim(v) == 0}
      values.update({k: _scalar(v) for k, v in self.evaluate(variables).items()})
      if values:
        self.writer.write(self.start + step, values, self.start)

  def write(self, step: int, values: Mapping[str, float]) -> None:
    """A point a method measured itself (PGU's evaluation after every
    epoch): only the writing is untimed."""
    with sweep.untimed():
      self.writer.write(self.start + step,
                        {k: _scalar(v) for k, v in values.items()}, self.start)

  def flush(self) -> None:
    with sweep.untimed():
      self.writer.flush()


def _scalar(value) -> float:
  return float(value)


def evaluator(model, forget, validation, batch_size: int = 1024
              ) -> Callable[[training.Variables], dict]:
  """`variables -> {forget/accuracy, validation/accuracy}` (training.accuracy
  on the S_f split and the validation split; a split that is None is left
  out)."""
  splits = {tag: split for tag, split in ((FORGET, forget),
                                          (VALIDATION, validation))
            if split is not None}

  def evaluate(variables) -> dict:
    if not splits:
      return {}
    variables = jax.device_get(variables)
    return {tag: training.accuracy(model, variables, split, batch_size)
            for tag, split in splits.items()}
  return evaluate


@contextlib.contextmanager
def recording(workdir: str, study: str, run_name: str, every: int,
              evaluate: Callable) -> Iterator[Curve | None]:
  """The curve of one run while the body runs it: None when curves are off
  (`every` 0) or the run's curve is complete; completed when the body
  returns, left partial (replaced by the rerun) when it raises."""
  if not every or done(workdir, run_name):
    yield None
    return
  writer = Writer(workdir, study, run_name)
  try:
    yield Curve(writer, int(every), evaluate)
  except BaseException:
    writer.close(complete=False)
    raise
  writer.close()


@contextlib.contextmanager
def task_recording(task, workdir: str, study: str, run_name: str, every: int
                   ) -> Iterator[Any]:
  """`task` with the curve of run `run_name` attached (`UnlearnTask.curve`;
  S_f and the validation split from the task), or `task` itself when no
  curve is recorded (`recording`)."""
  evaluate = every and evaluator(task.model, task.forget_split,
                                 task.validation, task.recipe.eval_batch_size)
  with recording(workdir, study, run_name, every, evaluate) as curve:
    yield task if curve is None else dataclasses.replace(task, curve=curve)


def every(config) -> int:
  """`config.curves_every` (0 when the config has none: curves off)."""
  return int(config.get('curves_every', 0) or 0)


def middle(values: Sequence[Any]) -> Any:
  """The middle of a study's axis (found fractions, budgets): the one run
  whose curves a study records."""
  values = list(values)
  return values[(len(values) - 1) // 2] if values else None


# --- what a study calls ------------------------------------------------------

def original_recording(config, workdir: str, study: str, run_name: str | None,
                       model, train, forget_rows, validation):
  """The curve of the one run's M_o training, `<run_name>/original` (on the
  run's S_f), for `sweep.original_and_oracle(..., original_curve=)`; yields
  None unless `run_name` is the study's curve run and curves are on."""
  if run_name is None or not every(config):
    return recording(workdir, study, '', 0, None)
  return recording(workdir, study, f'{run_name}/original', every(config),
                   evaluator(model, train.subset(np.asarray(forget_rows)),
                             validation))


def method_recorder(config, workdir: str, study: str, run_name: str | None,
                    method_name: str) -> Callable:
  """`task -> context yielding task` with the curve `<run_name>/<method>`
  attached (`task_recording`), or `task` unchanged unless `run_name` is
  the study's curve run."""
  steps = every(config) if run_name is not None else 0

  def attach(task):
    return task_recording(task, workdir, study, f'{run_name}/{method_name}',
                          steps)
  return attach


def no_curve(task):
  """A `method_recorder` that records nothing."""
  return contextlib.nullcontext(task)
