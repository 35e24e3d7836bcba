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


def run_study(run_fn: Callable[[], list], report_fn: Callable[[list], object],
              config, workdir: str) -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
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
