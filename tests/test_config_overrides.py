"""Every `--config.hparams.<method>.<field>=` override of every study config
parses and builds the method's hparams; a bad one is one line, exit 1."""

import dataclasses
import glob
import os
import subprocess
import sys

from absl import flags
from ml_collections import config_flags
import pytest

from unlearnjax.unlearn import METHODS
from unlearnjax.unlearn.registry import hparams_field_types

ROOT = os.path.join(os.path.dirname(__file__), '..')
CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, 'experiments',
                                                   'configs', '*.py'))
                 if os.path.basename(p) not in ('common.py', '__init__.py'))
STUDIES_WITH_HPARAMS = [p for p in CONFIGS
                        if os.path.basename(p) != 'why_fails.py']


def _parse(path, overrides):
  """The config as the scripts parse it (ml_collections reads the override
  flags from sys.argv when the flag is defined)."""
  argv = ['prog'] + list(overrides)
  saved, sys.argv = sys.argv, argv
  try:
    holder = flags.FlagValues()
    config_flags.DEFINE_config_file('config', path, flag_values=holder,
                                    lock_config=True)
    holder(argv)
    return holder.config
  finally:
    sys.argv = saved


def _cli_value(value, kind):
  del kind
  return str(value)


@pytest.mark.parametrize('path', STUDIES_WITH_HPARAMS,
                         ids=[os.path.basename(p) for p in STUDIES_WITH_HPARAMS])
def test_every_method_field_can_be_overridden(path):
  base = _parse(path, [])
  assert set(base.hparams) == set(METHODS), (
      'config.hparams must list every registered method (common.method_hparams)')
  for name in METHODS:
    types = hparams_field_types(name)
    overrides, expected = [], {}
    for field, value in base.hparams[name].items():
      kind = types[field]
      if value is None:  # a typed None: give a value of its type
        if kind not in (int, float):
          continue
        value = kind(1)
      overrides.append(f'--config.hparams.{name}.{field}='
                       f'{_cli_value(value, kind)}')
      expected[field] = value
    config = _parse(path, overrides)
    for field, value in expected.items():
      assert config.hparams[name][field] == value, (name, field)
    # The method's hparams accept every field the config holds.
    values = {k: v for k, v in config.hparams[name].items()}
    dataclasses.replace(METHODS[name].hparams(), **values)


@pytest.mark.parametrize('script,flag,field,value', [
    ('corrective', '--config.hparams.scrub.distill_weight=0.5',
     ('scrub', 'distill_weight'), 0.5),
    ('corrective', '--config.hparams.ptn_xlf.importance_data=retain',
     ('ptn_xlf', 'importance_data'), 'retain'),
    ('corrective', '--config.hparams.ssd.estimator=exact',
     ('ssd', 'estimator'), 'exact'),
    ('reload', '--config.hparams.reload.priming_step_size=0',
     ('reload', 'priming_step_size'), 0.0),
])
def test_documented_overrides(script, flag, field, value):
  config = _parse(os.path.join(ROOT, 'experiments', 'configs',
                               f'{script}.py'), [flag])
  assert config.hparams[field[0]][field[1]] == value


@pytest.mark.parametrize('flag,message', [
    ('--config.hparams.ssd.no_such_field=1',
     "config.hparams.ssd has no field 'no_such_field'; valid: "),
    ('--config.hparams.nosuch.x=1', "config.hparams has no field 'nosuch'"),
    ('--config.recipe.steps=abc', 'invalid literal for int()'),
    ('--config=experiments/configs/corrective.py:nosuch',
     "Unknown config 'nosuch'"),
    ('--config=no/such/file.py', "no config file 'no/such/file.py'"),
])
def test_a_bad_flag_is_one_line_and_exit_1(tmp_path, flag, message):
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'experiments', 'corrective.py'),
       f'--workdir={tmp_path}', flag],
      capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert out.returncode == 1
  assert 'Traceback' not in out.stderr
  lines = [l for l in out.stderr.splitlines() if l.startswith('error: ')]
  assert len(lines) == 1 and message in lines[0], out.stderr[-1000:]
  assert not os.path.exists(tmp_path / 'results.jsonl')
