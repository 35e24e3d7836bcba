"""What every experiments/ script does around its study: parallel set-up,
clear errors for bad input, and the report at the end."""

from __future__ import annotations

import dataclasses
import sys
from typing import Callable

from absl import logging

from unlearnjax import checks
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


@dataclasses.dataclass
class StudyOutcome:
  """What `run_and_report` did: the sweep's rows (diverged ones included),
  whether every run of the plan is done, and what the report wrote (None
  until the plan is complete, and on processes other than 0)."""
  rows: list
  complete: bool
  written: object = None

  @property
  def diverged(self) -> list:
    return [r for r in self.rows if r.get('diverged')]


def run_and_report(study: str, config, workdir: str, *, worker=None
                   ) -> StudyOutcome:
  """One study end to end, from a config (what a script, a notebook or a
  scheduler's worker calls): check the workdir and every config value
  (`checks`), run this worker's share of `unlearnjax.studies.<study>.plan`
  on the sweep engine, and once every run is done write the report
  (`unlearnjax.reports.<study>`, given the finished rows without diverged
  ones). Raises the library's errors (`USER_ERRORS` for bad input); the
  results already written are kept, and a rerun resumes.
  """
  import importlib  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from unlearnjax import sweep  # pylint: disable=g-import-not-at-top
  split_comma_lists(config)
  distributed = bool(config.get('distributed', False))
  parallel.maybe_initialize_distributed(distributed)
  checks.check_workdir(workdir)
  checks.check_config(config)
  checks.claim_workdir(workdir, study)
  study_module = importlib.import_module(f'unlearnjax.studies.{study}')
  report_module = importlib.import_module(f'unlearnjax.reports.{study}')
  write = getattr(report_module, f'write_{study}_report', None) or getattr(
      report_module, 'write_report')
  # A report may read settings of the config (`report_options(config)`).
  options = getattr(report_module, 'report_options', lambda c: {})(config)
  if worker is None:
    worker = sweep.worker_from_env(distributed=distributed)
  outcome = sweep.execute(study_module.plan(config, workdir), workdir, worker)
  result = StudyOutcome(outcome.rows, outcome.complete)
  if outcome.complete and jax.process_index() == 0:
    with sweep.report_lock(workdir):
      result.written = write([r for r in outcome.rows
                              if not r.get('diverged')], workdir, **options)
  return result


def run_script(study: str, config, workdir: str) -> None:
  """`run_and_report` as a script: progress on the terminal, a user error
  in one line (`error: ...`) and exit 1, never a traceback."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from unlearnjax import sweep  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  try:
    worker = sweep.worker_from_env(
        distributed=bool(config.get('distributed', False)))
    outcome = run_and_report(study, config, workdir, worker=worker)
  except USER_ERRORS as e:
    _fail(e, workdir)
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() != 0:
    return
  if not outcome.complete:
    print(f'worker {worker.index + 1} of {worker.count}: its runs are done; '
          'the report is written when every worker has finished (by the last '
          f'one, or by rerunning this command). Results: {workdir}')
    return
  logging.info('Wrote %s', outcome.written)
  if outcome.diverged:
    print(f'{len(outcome.diverged)} run(s) diverged (rows with "diverged": '
          'true in the results, left out of the report).')
  print(f'results: {workdir}/results*.jsonl; report: {outcome.written}')


def _fail(error: Exception, workdir: str) -> None:
  """The error's line (and any advice lines the message carries, e.g. how
  to get a data set), then exit 1; the finished rows are kept."""
  message = str(error).strip() or type(error).__name__
  print(f'error: {message}\n(results already in {workdir} are kept; rerun '
        'to resume)', file=sys.stderr)
  sys.exit(1)


def define_config_flag(default_path: str, name: str = 'config'):
  """`config_flags.DEFINE_config_file(name, default_path)`, after checking
  the command line's `--config=` file and `--config.a.b=` fields: a file or
  config name that does not exist, or a field the config does not have,
  ends in one line naming what is valid, and exit 1 (ml_collections would
  raise a traceback while the flag is defined)."""
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  problem = config_argv_problem(sys.argv, default_path, name)
  if problem:
    print(f'error: {problem}', file=sys.stderr)
    sys.exit(1)
  return config_flags.DEFINE_config_file(name, default_path,
                                         'Study configuration.',
                                         lock_config=True)


def run_app(main: Callable) -> None:
  """`absl.app.run(main)`, but a flag that fails to parse (e.g. a value of
  the wrong type) ends in one line and exit 1, never a traceback."""
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  try:
    remaining = flags.FLAGS(sys.argv)
  except Exception as e:  # pylint: disable=broad-except
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  # Parsed once: a second parse would load the --config file again.
  app.run(main, flags_parser=lambda argv: remaining)


def config_argv_problem(argv, default_path: str, name: str = 'config'
                        ) -> str | None:
  """What is wrong with the `--<name>=FILE[:NAME]` and `--<name>.a.b=` flags
  of `argv`, in one line, or None."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  prefix = f'--{name}'
  spec = default_path
  for arg in argv[1:]:
    if arg.startswith(prefix + '='):
      spec = arg.split('=', 1)[1]
  path, _, config_name = spec.partition(':')
  if not os.path.isfile(path):
    return (f'{prefix}={spec}: no config file {path!r}; give the path of a '
            f'file in experiments/configs/ (e.g. {default_path}[:NAME])')
  try:
    module_spec = importlib.util.spec_from_file_location('_checked_config',
                                                         path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(config_name or None)
  except Exception as e:  # pylint: disable=broad-except
    return f'{prefix}={spec}: {e}'
  for arg in argv[1:]:
    if not arg.startswith(prefix + '.'):
      continue
    field_path = arg[len(prefix) + 1:].partition('=')[0]
    node, walked = config, []
    for part in field_path.split('.'):
      keys = list(node.keys()) if hasattr(node, 'keys') else []
      if part not in keys:
        where = '.'.join([name] + walked)
        return (f'{arg}: {where} has no field {part!r}; valid: '
                f'{", ".join(map(str, keys)) or "(none)"}')
      node = node[part]
      walked.append(part)
  return None


def study_script(study: str, default_config: str) -> None:
  """The whole of an `experiments/<study>.py` script: `--workdir` and
  `--config` (with one-line errors, `define_config_flag`), then
  `run_script` (`run_and_report` with errors in one line)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  workdir = flags.DEFINE_string('workdir', None, 'Where results, checkpoints '
                                'and figures go.', required=True)
  config = define_config_flag(default_config)

  def main(argv):
    del argv
    run_script(study, config.value, workdir.value)

  run_app(main)
