r"""Projected-Gradient Unlearning (Hoang et al. 2024), §4: Tables 1-4, Figs. 1-6.

  python experiments/pgu.py --workdir=/tmp/pgu
  python experiments/pgu.py --workdir=/tmp/pgu_c10 \
      --config=experiments/configs/pgu.py:cifar10
  python experiments/pgu.py --workdir=/tmp/pgu \
      --config.hparams.pgu.energy_threshold=0.95

Runs on the sweep engine (`unlearnjax/sweep.py`: one group per seed; several
workers with `launch.sh --workers=N`). Writes <workdir>/results*.jsonl (one
line per finished run; reruns skip them) and, once every run is done, the
report: removal, class_removal, incremental, depoison (PNG + Markdown) and
report.md. A `--config.` field that does not exist (e.g.
`--config.hparams.pgu.gamma`) is a one-line error naming the valid ones.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from unlearnjax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == '__main__':
  cli.study_script('pgu', os.path.join(os.path.dirname(__file__),
                                          'configs', 'pgu.py'))
