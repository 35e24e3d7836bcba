"""Per-score detection quality of the expansion on a corrective study's tasks.

  python -m unlearnjax.expansion.diagnose --workdir=/tmp/diagnose \
      [--manipulations=badnet,ic] [--seeds=0,1,2] [--fractions=one-shot,0.1]

For each (manipulation, seed, found fraction) of the corrective `expansion`
config it trains (or reads from WORKDIR) M_o, then prints, per registered
score, the AUC of the remaining S_m against the clean retain rows and how
many of each pass the score's threshold from `calibrate.expand` (the
study's rule, default fpr 0.01), and the same for the union. A diagnostic for building a
score (which manipulation it finds, how many clean rows it adds); the
study's rows are the measurement.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from unlearnjax import expansion, forget as forget_lib, models, sweep
from unlearnjax.expansion import calibrate
from unlearnjax.results import run_key
from unlearnjax.studies import corrective
from unlearnjax.unlearn import UnlearnTask


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
  """P(positive > negative) + ½ P(tie)."""
  if not positive.size or not negative.size:
    return float('nan')
  greater = (positive[:, None] > negative[None]).mean()
  ties = (positive[:, None] == negative[None]).mean()
  return float(greater + 0.5 * ties)


def _fraction(text: str):
  return text if text == forget_lib.ONE_SHOT else float(text)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--manipulations', default='badnet,ic')
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--fractions', default='one-shot,0.1,0.2,0.5')
  parser.add_argument('--false_positive_rate', type=float,
                      default=calibrate.DEFAULT_FALSE_POSITIVE_RATE)
  args = parser.parse_args(argv)
  from experiments.configs import corrective as configs  # pylint: disable=g-import-not-at-top
  config = configs.get_config('expansion')
  recipe = corrective.recipe_from_config(config)
  for manipulation_name in args.manipulations.split(','):
    for seed in (int(s) for s in args.seeds.split(',')):
      manipulation, validation = corrective.build_data(
          config, manipulation_name, seed)
      model = models.get_model(config.model, manipulation.train.num_classes,
                               **config.model_kwargs)
      base = corrective.setting(config, manipulation_name)
      (original, _), _ = sweep.original_and_oracle(
          args.workdir, run_key(base), seed, model, recipe, manipulation,
          {'setting': base, 'seed': seed})
      cache = {}
      for fraction in map(_fraction, args.fractions.split(',')):
        forget = forget_lib.sample_forget(manipulation.manipulated, fraction,
                                          seed)
        task = UnlearnTask(
            model=model, original=original, train=manipulation.train,
            forget=forget,
            retain=forget_lib.retain_indices(len(manipulation.train), forget),
            validation=validation, recipe=recipe, cache=cache)
        # The study's own rule and thresholds (scores are cached per task).
        found = calibrate.expand(
            task, false_positive_rate=args.false_positive_rate)
        poison = np.isin(task.retain, manipulation.manipulated)
        union = np.isin(task.retain, found.added)
        cells = []
        for name, threshold in found.thresholds.items():
          scores = expansion.score_rows(task, name, task.retain)
          passed = scores > threshold
          cells.append(f'{name}: AUC {auc(scores[poison], scores[~poison]):.3f}'
                       f' S_m {(passed & poison).sum()} clean '
                       f'{(passed & ~poison).sum()}')
        print(f'{manipulation_name} seed={seed} f={fraction} '
              f'|S_m \\ S_f|={poison.sum()}: union S_m '
              f'{(union & poison).sum()} clean {(union & ~poison).sum()}')
        for cell in cells:
          print(f'    {cell}')
        sys.stdout.flush()
  return 0


if __name__ == '__main__':
  sys.exit(main())
