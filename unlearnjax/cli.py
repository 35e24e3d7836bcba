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
  `--config` (with one-line errors, `define_config_flag`), the study's
  `plan` on the sweep engine (`run_sweep`) and its report,
  `unlearnjax.reports.<study>.write_<study>_report` (or `write_report`),
  given the keyword arguments of the module's `report_options(config)` if
  it has one."""
  import importlib  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  workdir = flags.DEFINE_string('workdir', None, 'Where results, checkpoints '
                                'and figures go.', required=True)
  config = define_config_flag(default_config)

  def main(argv):
    del argv
    study_module = importlib.import_module(f'unlearnjax.studies.{study}')
    report_module = importlib.import_module(f'unlearnjax.reports.{study}')
    write = getattr(report_module, f'write_{study}_report', None) or getattr(
        report_module, 'write_report')
    # A report may read settings of the config (`report_options(config)`).
    options = getattr(report_module, 'report_options', lambda c: {})(
        config.value)
    run_sweep(lambda: study_module.plan(config.value, workdir.value),
              lambda rows: write(rows, workdir.value, **options),
              config.value, workdir.value)

  run_app(main)
