r"""Corrective machine unlearning benchmark (Goel et al. 2024): Fig. 2, Tab. 1, Fig. 3.

  python experiments/corrective.py --workdir=/tmp/corrective
  python experiments/corrective.py --workdir=/tmp/c10 \
      --config=experiments/configs/corrective.py:cifar10

Writes <workdir>/results.jsonl (one line per finished run; reruns skip them)
and the figures and tables (figure2.png, table1.md, figure3.png, report.md).
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from unlearnjax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == '__main__':
  cli.study_script('corrective', os.path.join(os.path.dirname(__file__),
                                          'configs', 'corrective.py'))
