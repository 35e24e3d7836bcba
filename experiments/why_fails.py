r"""Why unlearning fails to remove poisons (Pawelczyk et al. 2024, §6, App. C).

  python experiments/why_fails.py --workdir=/tmp/why_fails
  python experiments/why_fails.py --workdir=/tmp/wf \
      --config=experiments/configs/why_fails.py:smoke

Runs `unlearnjax.studies.why_fails` on the sweep engine: <workdir>/results.jsonl
(or one results-worker<i>.jsonl per worker) gets one line per (poison, seed,
β) of the model-shift experiment and per (seed, forget set) of the
gradient-alignment experiment (reruns skip them; a run that fails to converge
is a row with "diverged": true), then model_shift.png/.md,
gradient_alignment.png/.md and report.md (`unlearnjax.reports.why_fails`;
rebuild with `python -m unlearnjax.reports.why_fails --workdir=DIR`).
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
    os.path.join(os.path.dirname(__file__), 'configs', 'why_fails.py'))


def main(argv):
  del argv
  from unlearnjax.reports import why_fails as report  # pylint: disable=g-import-not-at-top
  from unlearnjax.studies import why_fails  # pylint: disable=g-import-not-at-top
  cli.run_sweep(lambda: why_fails.plan(_CONFIG.value, _WORKDIR.value),
                lambda rows: report.write_report(rows, _WORKDIR.value),
                _CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  cli.run_app(main)
