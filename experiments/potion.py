r"""Poison unlearning with PTN and XLF (Potion): Table 1, Fig. 8/9 (ρ), Fig. 10, Fig. 11 (timing).

  python experiments/potion.py --workdir=/tmp/potion
  python experiments/potion.py --workdir=/tmp/c10 \
      --config=experiments/configs/potion.py:cifar10

Writes <workdir>/results.jsonl (one line per finished run; reruns skip them)
and the figures and tables (table1.md, figure10.png, rho_sensitivity.png,
timing.png, report.md).
"""

import os
import sys

from absl import flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from unlearnjax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

_WORKDIR = flags.DEFINE_string('workdir', None, 'Where results, checkpoints '
                               'and figures go.', required=True)
_CONFIG = cli.define_config_flag(
    os.path.join(os.path.dirname(__file__), 'configs', 'potion.py'))


def main(argv):
  del argv
  from unlearnjax.studies import potion  # pylint: disable=g-import-not-at-top
  from unlearnjax.reports import potion as report_potion  # pylint: disable=g-import-not-at-top
  cli.run_sweep(lambda: potion.plan(_CONFIG.value, _WORKDIR.value),
                lambda rows: report_potion.write_potion_report(
                    rows, _WORKDIR.value,
                    timing_size=_CONFIG.value.timing_size or None),
                _CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  cli.run_app(main)
