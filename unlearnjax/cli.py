"""What every experiments/ script does around its study: parallel set-up,
clear errors for bad input, and the report at the end."""

from __future__ import annotations

import sys
from typing import Callable

from absl import logging

from unlearnjax import parallel
from unlearnjax.errors import ConfigError, DatasetUnavailableError

# Errors that mean the input is wrong (not a bug): print the message, exit 1.
USER_ERRORS = (ConfigError, DatasetUnavailableError, FloatingPointError)


def split_comma_lists(config) -> None:
  """`--config.methods=gd,ngd` arrives as the 1-tuple ('gd,ngd',) (ml_collections
  parses a tuple override with literal_eval, which fails on bare names):
  split such strings in every tuple field, in place, nested ConfigDicts too."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  for name in list(config.keys()):
    value = config[name]
    if isinstance(value, ml_collections.ConfigDict):
      split_comma_lists(value)
    elif isinstance(value, tuple) and any(
        isinstance(v, str) and ',' in v for v in value):
      config[name] = tuple(
          part.strip() for v in value
          for part in (v.split(',') if isinstance(v, str) else [v])
          if not isinstance(part, str) or part.strip())


def run_study(run_fn: Callable[[], list], report_fn: Callable[[list], object],
              config, workdir: str) -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  split_comma_lists(config)
  parallel.maybe_initialize_distributed(config.get('distributed', False))
  try:
    rows = run_fn()
  except USER_ERRORS as e:
    print(f'error: {e}\n(results already in {workdir}/results.jsonl are kept; '
          'rerun to resume)', file=sys.stderr)
    sys.exit(1)
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:
    written = report_fn(rows)
    logging.info('Wrote %s', written)
    print(f'results: {workdir}/results.jsonl; report: {written}')


def run_sweep(plan_fn: Callable[[], object], report_fn: Callable[[list], object],
              config, workdir: str) -> None:
  """What every study script does: its plan on the sweep engine, as this
  worker (`sweep.worker_from_env`), then the report once every run of the
  plan is done (by whichever worker finishes last).

  `plan_fn() -> sweep.Plan`; `report_fn(rows) -> what it wrote`, given the
  finished rows without diverged ones (those stay in the results file).
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  from unlearnjax import sweep  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  split_comma_lists(config)
  distributed = bool(config.get('distributed', False))
  parallel.maybe_initialize_distributed(distributed)
  try:
    worker = sweep.worker_from_env(distributed=distributed)
    outcome = sweep.execute(plan_fn(), workdir, worker)
  except USER_ERRORS as e:
    print(f'error: {e}\n(results already in {workdir} are kept; rerun to '
          'resume)', file=sys.stderr)
    sys.exit(1)
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() != 0:
    return
  if not outcome.complete:
    print(f'worker {worker.index + 1} of {worker.count}: its runs are done; '
          'the report is written when every worker has finished (by the last '
          f'one, or by rerunning this command). Results: {workdir}')
    return
  diverged = [r for r in outcome.rows if r.get('diverged')]
  with sweep.report_lock(workdir):
    written = report_fn([r for r in outcome.rows if not r.get('diverged')])
  logging.info('Wrote %s', written)
  if diverged:
    print(f'{len(diverged)} run(s) diverged (rows with "diverged": true in '
          'the results, left out of the report).')
  print(f'results: {workdir}/results*.jsonl; report: {written}')
