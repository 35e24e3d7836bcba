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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from unlearnjax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == '__main__':
  cli.study_script('why_fails', os.path.join(os.path.dirname(__file__),
                                          'configs', 'why_fails.py'))
