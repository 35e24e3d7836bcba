r"""RELOAD (blind unlearning, remedial learning; §4): Tables 1-3.

  python experiments/reload.py --workdir=/tmp/reload
  python experiments/reload.py --workdir=/tmp/c10 \
      --config=experiments/configs/reload.py:cifar10
  python experiments/reload.py --workdir=/tmp/reload \
      --config.hparams.reload.priming_step_size=0

Runs on the sweep engine (`unlearnjax/sweep.py`: one group per (scenario,
seed); several workers with `launch.sh --workers=N`). Writes
<workdir>/results*.jsonl (one line per finished run; reruns skip them) and,
once every run is done, the report: one table per scenario
(table_<scenario>.md), figure.png and report.md. A
`--config.hparams.<method>.<field>` that names no method or field is a
one-line error listing the valid names.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from unlearnjax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == '__main__':
  cli.study_script('reload', os.path.join(os.path.dirname(__file__),
                                          'configs', 'reload.py'))
