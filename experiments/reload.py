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

from absl import flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from unlearnjax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

_WORKDIR = flags.DEFINE_string('workdir', None, 'Where results, checkpoints '
                               'and figures go.', required=True)
# A bad --config= file or name, or a --config.<path> the config lacks, is one
# line naming what is valid (cli.define_config_flag).
_CONFIG = cli.define_config_flag(
    os.path.join(os.path.dirname(__file__), 'configs', 'reload.py'))


def main(argv):
  del argv
  from unlearnjax.studies import reload  # pylint: disable=g-import-not-at-top
  from unlearnjax.reports import reload as report_reload  # pylint: disable=g-import-not-at-top
  cli.run_sweep(lambda: reload.plan(_CONFIG.value, _WORKDIR.value),
                lambda rows: report_reload.write_reload_report(
                    rows, _WORKDIR.value),
                _CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  cli.run_app(main)
