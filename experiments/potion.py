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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from unlearnjax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == '__main__':
  cli.study_script('potion', os.path.join(os.path.dirname(__file__),
                                          'configs', 'potion.py'))
