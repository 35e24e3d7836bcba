r"""Projected-Gradient Unlearning (Hoang et al. 2024), §4: Tables 1-4, Figs. 1-6.

  python experiments/pgu.py --workdir=/tmp/pgu
  python experiments/pgu.py --workdir=/tmp/pgu_c10 \
      --config=experiments/configs/pgu.py:cifar10

Writes <workdir>/results.jsonl (one line per finished run; reruns skip them)
and the report: removal, class_removal, incremental, depoison (PNG +
Markdown) and report.md.
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
    'config', os.path.join(os.path.dirname(__file__), 'configs', 'pgu.py'),
    'Study configuration.', lock_config=True)


def main(argv):
  del argv
  from unlearnjax.studies import pgu  # pylint: disable=g-import-not-at-top
  from unlearnjax import report_pgu  # pylint: disable=g-import-not-at-top
  cli.run_study(lambda: pgu.run(_CONFIG.value, _WORKDIR.value),
                lambda rows: report_pgu.write_pgu_report(rows, _WORKDIR.value),
                _CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
