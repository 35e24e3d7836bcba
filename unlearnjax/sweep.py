"""The one sweep engine every study runs on.

A study says *what* to run: a `Plan` of `Group`s, each group the runs that
share expensive set-up (data, manipulation, M_o, M*, caches), each `Run` its
identity (`run_key`) and a function that returns its measured fields. The
engine owns *how*:

* the results file(s): finished runs are skipped, one JSON line is appended
  per finished run (process 0 writes), a killed worker loses at most the run
  it was in;
* lazy group set-up: a group whose runs are all done is never set up; the
  set-up runs once per worker (trained models are orbax checkpoints, so a
  rerun restores them);
* the progress bar: runs done / left, the current run, time per run;
* one divergence policy: a `FloatingPointError` in a run becomes a row with
  `diverged: true` and the message, and the sweep goes on;
* one timing policy (`timed`): a run's `seconds` exclude XLA compilation,
  which is reported apart as `compile_seconds`, with `block_until_ready`;
* run parallelism: each worker (a process started by `launch.sh --workers=N`,
  a SLURM array task or `srun` task, a TPU-pod host) takes a disjoint,
  deterministic share of the groups (so a group's M_o is trained once) and
  writes its own shard, `results-worker<i>.jsonl`; readers merge every shard
  with `results.jsonl` (`results.read_rows`). Data parallelism (one run over
  every device and host, `--config.distributed=True`) is the same code path
  with one worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import shutil
import threading
import time
import zlib
from typing import Any, Callable, Iterator, Sequence

import jax
import tqdm

from unlearnjax import checkpoint
from unlearnjax import results as results_lib
from unlearnjax import training


def seed_key(seed: int, purpose: str) -> jax.Array:
  """The key of one random choice of a run: derived from (study seed,
  purpose), so every method sees the same forget set, M_o, M*, … for a seed."""
  return jax.random.fold_in(jax.random.key(seed), zlib.crc32(purpose.encode()))


def trained_model(workdir, name, model, recipe, train, indices, key, meta,
                  initial=None, curve=None):
  """A group's trained model, trained once (from `initial` when given:
  fine-tuning) and cached as an orbax checkpoint in
  `<workdir>/checkpoints/<name>`; returns (variables, seconds the training
  took when it ran, its `curve` points left out). A kill while it trains
  resumes from its partial checkpoint. `curve` (`curves.Curve`) records
  the training when it runs."""
  path = os.path.join(workdir, 'checkpoints', name)
  like = training.init_variables(model, jax.random.key(0), train.image_shape)
  # Two workers may need the same model (e.g. a pretrained start shared by
  # several groups): the second waits for the first's checkpoint.
  with file_lock(path + '.lock'):
    restored = checkpoint.restore_if_valid(path, like)
    if restored is not None:
      variables, saved = restored
      return variables, saved['seconds']
    return _train_and_save(path, model, recipe, train, indices, key, meta,
                           initial, name, curve)


def original_and_oracle(workdir, setting_key, seed, model, recipe,
                        manipulation, meta, initial=None, original_curve=None):
  """A group's M_o (trained on the manipulated split; `original_curve`
  records its training) and M* (the oracle, trained on its clean rows
  only), each trained once and cached (`trained_model`): ((M_o, seconds),
  (M*, seconds))."""
  original = trained_model(
      workdir, f'{setting_key}-seed{seed}-original', model, recipe,
      manipulation.train, None, seed_key(seed, 'original'), meta, initial,
      original_curve)
  oracle = trained_model(
      workdir, f'{setting_key}-seed{seed}-oracle', model, recipe,
      manipulation.train, manipulation.clean_indices,
      seed_key(seed, 'oracle'), meta, initial)
  return original, oracle


def _train_and_save(path, model, recipe, train, indices, key, meta, initial,
                    name, curve=None):
  partial = path + '-partial'  # resumable while it trains (long recipes)
  # The study's timing policy (`timed`): compilation and curve points apart,
  # so a model trained in a fresh process (a resumed sweep) and one trained
  # after others report the same seconds.
  with timed() as timing:
    variables = training.fit(model, recipe, train, key, indices=indices,
                             variables=initial, what=name,
                             checkpoint_dir=partial,
                             checkpoint_every=max(500, recipe.steps // 10),
                             show_progress=recipe.steps >= 1000, curve=curve)
  seconds = timing.seconds
  if jax.process_index() == 0:
    checkpoint.save(path, variables, {
        **meta, 'seconds': seconds,
        'compile_seconds': timing.compile_seconds})
    shutil.rmtree(partial, ignore_errors=True)
  return variables, seconds


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a sweep.

  Attributes:
    key: its `run_key` (the hash of its identity).
    label: what the progress bar shows while it runs.
    measure: `(the group's set-up) -> dict`, the row's measured fields (the
      engine adds `run_key`, `identity` and, for a diverged run, `diverged`).
    identity: fields every row of this run carries, diverged or not (method,
      manipulation, seed, …).
    record: False for a run that produces a file rather than a row (e.g. a
      figure's raw data); its `done` says whether it ran.
    done: for `record=False` runs: `() -> bool`.
  """
  key: str
  label: str
  measure: Callable[[Any], dict | None]
  identity: dict = dataclasses.field(default_factory=dict)
  record: bool = True
  done: Callable[[], bool] | None = None


@dataclasses.dataclass(frozen=True)
class Group:
  """Runs that share `setup()` (called at most once per worker, lazily).

  `shares`: groups with the same value (e.g. the name of an original model
  several groups start from) go to the same worker, so that what they share
  is computed once and never by two workers at the same time.
  """
  name: str
  setup: Callable[[], Any]
  runs: Sequence[Run]
  shares: str | None = None


@dataclasses.dataclass(frozen=True)
class Plan:
  study: str
  groups: Sequence[Group]

  @property
  def keys(self) -> set[str]:
    return {r.key for g in self.groups for r in g.runs if r.record}


@dataclasses.dataclass(frozen=True)
class Worker:
  """This process's place among the sweep's workers."""
  index: int = 0
  count: int = 1

  def __post_init__(self):
    if self.count < 1 or not 0 <= self.index < self.count:
      raise ValueError(f'worker {self.index} of {self.count}: need '
                       '0 <= index < count')

  @property
  def shard_name(self) -> str:
    return ('results.jsonl' if self.count == 1
            else f'results-worker{self.index}.jsonl')


def worker_from_env(environ=None, distributed: bool = False) -> Worker:
  """The worker this process is, from the scheduler that started it.

  In order: `UNLEARNJAX_WORKER_INDEX`/`UNLEARNJAX_NUM_WORKERS` (`launch.sh
  --workers=N`); a SLURM array (`SLURM_ARRAY_TASK_ID` from
  `SLURM_ARRAY_TASK_MIN`, `SLURM_ARRAY_TASK_COUNT`); SLURM tasks of one job
  step (`SLURM_PROCID`, `SLURM_NTASKS`); the hosts of a TPU pod
  (`TPU_WORKER_ID`, `TPU_WORKER_HOSTNAMES`). With `distributed` (one run over
  every host, `jax.distributed`) there is one worker, whatever the scheduler.
  """
  env = os.environ if environ is None else environ
  if distributed:
    return Worker()

  def count_and_index(count_name, index_name, offset_name=None):
    count, index = env.get(count_name), env.get(index_name)
    if count is None or index is None:
      return None
    offset = int(env.get(offset_name, 0)) if offset_name else 0
    return Worker(index=int(index) - offset, count=int(count))

  for names in (('UNLEARNJAX_NUM_WORKERS', 'UNLEARNJAX_WORKER_INDEX'),
                ('SLURM_ARRAY_TASK_COUNT', 'SLURM_ARRAY_TASK_ID',
                 'SLURM_ARRAY_TASK_MIN'),
                ('SLURM_NTASKS', 'SLURM_PROCID')):
    worker = count_and_index(*names)
    if worker is not None:
      return worker
  hosts = env.get('TPU_WORKER_HOSTNAMES')
  if hosts and env.get('TPU_WORKER_ID') is not None:
    return Worker(index=int(env['TPU_WORKER_ID']),
                  count=len([h for h in hosts.split(',') if h]))
  return Worker()


def assign(groups: Sequence[Group], count: int) -> list[int]:
  """A worker for every group: groups that `share` something form one
  bundle; the bundle with the most runs first, each to the least loaded
  worker (ties to the lower index); deterministic."""
  bundles: dict = {}
  for g, group in enumerate(groups):
    bundles.setdefault(group.shares if group.shares is not None else (g,),
                       []).append(g)
  size = {b: sum(len(groups[g].runs) for g in members)
          for b, members in bundles.items()}
  order = sorted(bundles, key=lambda b: (-size[b], bundles[b][0]))
  load = [0] * count
  owner = [0] * len(groups)
  for b in order:
    w = min(range(count), key=lambda i: (load[i], i))
    for g in bundles[b]:
      owner[g] = w
    load[w] += size[b]
  return owner


# --- timing: compile time apart -------------------------------------------

_COMPILE_EVENTS = ('/jax/core/compile/jaxpr_trace_duration',
                   '/jax/core/compile/jaxpr_to_mlir_module_duration',
                   '/jax/core/compile/backend_compile_duration')
_local = threading.local()
_listening = False


def _on_event(event: str, duration: float, **_) -> None:
  if event in _COMPILE_EVENTS and not getattr(_local, 'untimed', 0):
    for counter in getattr(_local, 'counters', ()):
      counter[0] += duration


def _listen() -> None:
  global _listening
  if not _listening:
    jax.monitoring.register_event_duration_secs_listener(_on_event)
    _listening = True


@dataclasses.dataclass
class Timing:
  seconds: float = 0.0          # wall time without compilation or untimed
  compile_seconds: float = 0.0  # tracing, lowering and XLA compilation
  untimed_seconds: float = 0.0  # in `untimed` blocks (curve points)


@contextlib.contextmanager
def timed() -> Iterator[Timing]:
  """Times its body: `seconds` without JAX compilation and without the
  `untimed` blocks inside it, `compile_seconds` and `untimed_seconds` apart
  (the study's policy for every timing it reports). Put
  `jax.block_until_ready` on what the body computes, so that its work falls
  inside."""
  _listen()
  counter = [0.0, 0.0]
  counters = getattr(_local, 'counters', [])
  _local.counters = counters + [counter]
  timing = Timing()
  start = time.perf_counter()
  try:
    yield timing
  finally:
    wall = time.perf_counter() - start
    _local.counters = counters
    timing.compile_seconds = counter[0]
    timing.untimed_seconds = counter[1]
    timing.seconds = max(0.0, wall - counter[0] - counter[1])


@contextlib.contextmanager
def untimed() -> Iterator[None]:
  """Leaves its body (compilation included) out of every enclosing `timed`:
  work that observes a run without being part of it (`curves`: evaluation
  and writing of curve points). Counted once when nested."""
  depth = getattr(_local, 'untimed', 0)
  _local.untimed = depth + 1
  start = time.perf_counter()
  try:
    yield
  finally:
    _local.untimed = depth
    if depth == 0:
      wall = time.perf_counter() - start
      for counter in getattr(_local, 'counters', ()):
        counter[1] += wall


def timed_call(fn: Callable[[], Any]) -> tuple[Any, Timing]:
  """(fn(), its Timing), with the result blocked until ready."""
  with timed() as timing:
    out = jax.block_until_ready(fn())
  return out, timing


# --- the engine --------------------------------------------------------------

@dataclasses.dataclass
class Outcome:
  """What `execute` did: this sweep's rows (every worker's, as far as they
  are finished) and whether every run of the plan is done."""
  rows: list[dict]
  complete: bool
  ran: int


def execute(plan: Plan, workdir: str, worker: Worker | None = None, *,
            progress: bool = True) -> Outcome:
  """Runs this worker's share of `plan` (module doc)."""
  worker = worker or Worker()
  os.makedirs(workdir, exist_ok=True)
  shard = results_lib.ResultsFile(os.path.join(workdir, worker.shard_name))
  done = results_lib.done_keys(workdir)
  is_writer = jax.process_index() == 0
  owner = assign(plan.groups, worker.count)
  mine = [g for g, w in zip(plan.groups, owner) if w == worker.index]

  def finished(run: Run) -> bool:
    return run.done() if not run.record else run.key in done

  total = sum(len(g.runs) for g in mine)
  desc = plan.study + (f' worker {worker.index + 1}/{worker.count}'
                       if worker.count > 1 else '')
  bar = tqdm.tqdm(total=total, desc=desc, unit='run', dynamic_ncols=True,
                  disable=not (progress and is_writer))
  ran = 0
  try:
    ran = _run_groups(mine, finished, bar, shard, done, is_writer)
  finally:
    bar.close()  # an error's message then starts on a line of its own
  merged = results_lib.read_rows(workdir)
  keys = plan.keys
  rows = [r for r in merged if r.get('run_key') in keys]
  complete = keys <= {r['run_key'] for r in rows} and all(
      r.done() for g in plan.groups for r in g.runs if not r.record)
  return Outcome(rows=rows, complete=complete, ran=ran)


def _run_groups(groups, finished, bar, shard, done, is_writer) -> int:
  """The engine's loop over this worker's groups; returns the runs it ran."""
  ran = 0
  for group in groups:
    pending = [r for r in group.runs if not finished(r)]
    bar.update(len(group.runs) - len(pending))
    if not pending:
      continue
    bar.set_postfix_str(f'{group.name}: set-up')
    state = group.setup()
    for run in pending:
      bar.set_postfix_str(run.label)
      try:
        fields = run.measure(state)
      except FloatingPointError as e:
        fields = {'diverged': True, 'error': str(e)}
      ran += 1
      if run.record and is_writer:
        row = {**run.identity, **(fields or {}), 'run_key': run.key}
        row.setdefault('diverged', False)
        shard.append(row)
        done.add(run.key)
      bar.update(1)
  return ran


@contextlib.contextmanager
def report_lock(workdir: str) -> Iterator[None]:
  """Held while a worker writes the report, so two workers that finish at
  once do not write it over each other."""
  with file_lock(os.path.join(workdir, '.report.lock')):
    yield


@contextlib.contextmanager
def file_lock(path: str) -> Iterator[None]:
  """An exclusive lock between the processes of one machine (or a shared
  file system with POSIX locks) while the body runs."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)
