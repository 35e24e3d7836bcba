r"""Why unlearning fails to remove poisons (Pawelczyk et al. 2024, §6, App. C).

  python experiments/why_fails.py --workdir=/tmp/why_fails
  python experiments/why_fails.py --workdir=/tmp/wf \
      --config=experiments/configs/why_fails.py:smoke

Writes <workdir>/results.jsonl (one line per (poison, seed, β) of the
model-shift experiment and per (seed, forget set) of the gradient-alignment
experiment; reruns skip them) and model_shift.png/.md,
gradient_alignment.png/.md and report.md.
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
    'config', os.path.join(os.path.dirname(__file__), 'configs',
                           'why_fails.py'),
    'Study configuration.', lock_config=True)


def main(argv):
  del argv
  from unlearnjax.studies import why_fails  # pylint: disable=g-import-not-at-top
  cli.run_study(lambda: why_fails.run(_CONFIG.value, _WORKDIR.value),
                lambda rows: why_fails.write_report(rows, _WORKDIR.value),
                _CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
