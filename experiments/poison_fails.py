r"""Machine unlearning fails to remove poisons (Pawelczyk et al. 2024): Figs. 2, 3, 6-7, Table 2.

  python experiments/poison_fails.py --workdir=/tmp/poison_fails
  python experiments/poison_fails.py --workdir=/tmp/c10 \
      --config=experiments/configs/poison_fails.py:cifar10

Runs the study's plan on the sweep engine (`unlearnjax/sweep.py`; several
workers: `launch.sh --workers=N`). Writes <workdir>/results.jsonl (one line
per finished run, `results-worker<i>.jsonl` per worker; reruns skip them)
and, once every run is done, the figures and tables (figure2, figure3,
table2, figure7 as PNG and Markdown; report.md).
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from unlearnjax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == '__main__':
  cli.study_script('poison_fails', os.path.join(os.path.dirname(__file__),
                                          'configs', 'poison_fails.py'))
