r"""Corrective machine unlearning benchmark (Goel et al. 2024): Fig. 2, Tab. 1, Fig. 3.

  python experiments/corrective.py --workdir=/tmp/corrective
  python experiments/corrective.py --workdir=/tmp/c10 \
      --config=experiments/configs/corrective.py:cifar10

Writes <workdir>/results.jsonl (one line per finished run; reruns skip them)
and the figures and tables (figure2.png, table1.md, figure3.png, report.md).
"""

import os
import sys

from absl import flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from unlearnjax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

_WORKDIR = flags.DEFINE_string('workdir', None, 'Where results, checkpoints '
                               'and figures go.', required=True)
_CONFIG = cli.define_config_flag(
    os.path.join(os.path.dirname(__file__), 'configs', 'corrective.py'))


def main(argv):
  del argv
  from unlearnjax.studies import corrective  # pylint: disable=g-import-not-at-top
  from unlearnjax.reports import corrective as report  # pylint: disable=g-import-not-at-top
  cli.run_sweep(lambda: corrective.plan(_CONFIG.value, _WORKDIR.value),
                lambda rows: report.write_corrective_report(rows,
                                                            _WORKDIR.value),
                _CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  cli.run_app(main)
