r"""RELOAD (blind unlearning, remedial learning; §4): Tables 1-3.

  python experiments/reload.py --workdir=/tmp/reload
  python experiments/reload.py --workdir=/tmp/c10 \
      --config=experiments/configs/reload.py:cifar10

Writes <workdir>/results.jsonl (one line per finished run; reruns skip them)
and the report: one table per scenario (table_<scenario>.md), figure.png
and report.md.
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from unlearnjax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

_WORKDIR = flags.DEFINE_string('workdir', None, 'Where results, checkpoints '
                               'and figures go.', required=True)
_CONFIG = config_flags.DEFINE_config_file(
    'config', os.path.join(os.path.dirname(__file__), 'configs',
                           'reload.py'),
    'Study configuration.', lock_config=True)


def main(argv):
  del argv
  from unlearnjax.studies import reload  # pylint: disable=g-import-not-at-top
  from unlearnjax import report_reload  # pylint: disable=g-import-not-at-top
  cli.run_study(lambda: reload.run(_CONFIG.value, _WORKDIR.value),
                lambda rows: report_reload.write_reload_report(
                    rows, _WORKDIR.value),
                _CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
