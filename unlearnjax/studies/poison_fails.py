"""Machine unlearning fails to remove data poisoning (Pawelczyk et al. 2024, §4-5).

For each poison type (Gaussian, targeted gradient matching, indiscriminate
gradient canceling) and seed: poison the training data, train the original
M_o on it and retrain M* without the poisons (orbax checkpoints in the
workdir), then hand the identified poisons (`found_fraction` of S_m; the
paper: all of them) to every method at every compute budget (a share of the
original training steps, §5: 2 … 10%) and measure what is left
(`metrics.poisons`): test accuracy, GUS and TPR@FPR for Gaussian poisons,
target success for targeted ones. 'none' (M_o) and 'oracle' (M*, retrained)
rows are the references.

The runs go through the sweep engine (`unlearnjax/sweep.py`): one group per
(poison type, seed), whose set-up crafts (or loads) the poisons, trains (or
restores) M_o and M* and measures them; its runs are the two references and
every (method, budget). One row per finished run in the workdir's results
files; finished runs are skipped on rerun, and crafted poisons are cached in
`<workdir>/poisons/` so a resumed run does not craft them again. A method
whose run diverges (FloatingPointError) gives a `diverged` row.

A poison type may override the shared model, image size and recipe (its
ConfigDict's `model`, `model_kwargs`, `image_size`, `recipe`): the Gaussian
poison needs a model that memorises pixel noise (docs/DEVELOPING.md).

Curves (`unlearnjax.curves`, `config.curves_every`): the first poison's
first seed, every method at the middle budget, and M_o's training.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import pickle

import jax
import ml_collections

from unlearnjax import curves, data, forget as forget_lib, models, sweep
from unlearnjax import training
from unlearnjax.errors import ConfigError
from unlearnjax.manipulations import get_manipulation
from unlearnjax.metrics import poisons as poison_metrics_lib
from unlearnjax.results import run_key
from unlearnjax.studies import corrective
from unlearnjax.unlearn import UnlearnTask, get_method
from unlearnjax.unlearn.base import as_unlearned
from unlearnjax.unlearn.registry import changed_fields

STUDY = 'poison_fails'
# Keys of a poison's ConfigDict that are not the manipulation's arguments.
SETTING_KEYS = ('model', 'model_kwargs', 'image_size', 'recipe')
REFERENCES = ('none', 'oracle')  # M_o and M* (retrained without S_m)
# The reference metrics every method row repeats, beside its own.
REFERENCE_METRICS = ('test_accuracy', 'gus_z', 'tpr_at_fpr_0.01',
                     'target_success')


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks names and ranges before any work; raises ConfigError."""
  try:
    data.check_dataset(config.dataset)
    for name in config.poisons:
      get_manipulation(name)
      if name not in config:
        raise ValueError(f'config.{name} (the settings of poison {name!r}) '
                         'is missing')
      model, kwargs = poison_model(config, name)
      models.get_model(model, 10, **kwargs)
    for name in config.methods:
      get_method(name)
  except ValueError as e:
    raise ConfigError(str(e)) from e
  if not config.poisons:
    raise ConfigError('config.poisons is empty')
  if not config.methods:
    raise ConfigError('config.methods is empty')
  if not config.seeds:
    raise ConfigError('config.seeds is empty')
  if not config.budgets:
    raise ConfigError('config.budgets (shares of the original training '
                      'steps, e.g. 0.02,0.05,0.1) is empty')
  for budget in config.budgets:
    if not (isinstance(budget, (int, float)) and 0 < budget <= 1):
      raise ConfigError(f'budget {budget!r} is outside (0, 1]: it is the '
                        'share of the original training steps a method may '
                        'use (the paper: 0.02 … 0.1).')
  try:
    forget_lib.check_found_fraction(config.found_fraction)
  except ValueError as e:
    raise ConfigError(str(e)) from e
  if config.fresh_draws < 1:
    raise ConfigError(f'fresh_draws must be >= 1, got {config.fresh_draws}')
  corrective.check_hparams(config)
  for name in config.methods:
    if (get_method(name).takes_budget and name in config.hparams and
        'budget_fraction' in changed_fields(name, config.hparams[name])):
      raise ConfigError(
          f'config.hparams.{name}.budget_fraction: a budgeted method runs at '
          'every budget of config.budgets (§5); set --config.budgets=… '
          'instead.')


def poison_model(config, name: str) -> tuple[str, dict]:
  """(model name, its kwargs) of poison `name`: its own or the shared one."""
  own = config[name]
  model = own.get('model', None) or config.model
  kwargs = (own.model_kwargs.to_dict() if own.get('model_kwargs', None)
            is not None else config.model_kwargs.to_dict())
  return model, kwargs


def poison_recipe(config, name: str) -> training.Recipe:
  """The training recipe of M_o and M* for poison `name` (the shared recipe
  with the poison's own `recipe` fields over it)."""
  recipe = config.recipe.to_dict()
  recipe.update(config[name].get('recipe', ml_collections.ConfigDict()
                                 ).to_dict())
  return training.Recipe(**recipe)


def manipulation_settings(config, name: str) -> dict:
  """The manipulation's keyword arguments. A crafted poison's surrogate is the
  victim (Pawelczyk A.1: the crafting model is trained like the victim): when
  the manipulation takes `model`, `model_kwargs` or `surrogate_*` arguments
  that the poison's settings leave out, they come from its model and recipe."""
  settings = {k: v for k, v in config[name].to_dict().items()
              if k not in SETTING_KEYS}
  accepted = inspect.signature(get_manipulation(name).manipulate).parameters
  model, kwargs = poison_model(config, name)
  recipe = poison_recipe(config, name)
  derived = {'model': model, 'model_kwargs': kwargs,
             'surrogate_steps': recipe.steps,
             'surrogate_batch_size': recipe.batch_size,
             'surrogate_learning_rate': recipe.learning_rate,
             'surrogate_weight_decay': recipe.weight_decay}
  for key, value in derived.items():
    if key in accepted and key not in settings:
      settings[key] = value
  return settings


def setting(config, name: str) -> dict:
  """What makes the numbers of a (poison, seed) what they are."""
  model, kwargs = poison_model(config, name)
  return {
      'study': STUDY, 'dataset': config.dataset,
      'image_size': config[name].get('image_size', None) or config.image_size,
      'max_train': config.max_train, 'max_test': config.max_test,
      'validation_fraction': config.validation_fraction,
      'model': model, 'model_kwargs': kwargs,
      'recipe': dataclasses.asdict(poison_recipe(config, name)),
      'manipulation': name,
      'manipulation_settings': manipulation_settings(config, name),
      'found_fraction': config.found_fraction,
      'fresh_draws': config.fresh_draws,
  }


def build_poisoned(config, workdir: str, name: str, seed: int, base: dict):
  """(Manipulation, validation); a crafted manipulation is cached on disk.

  The data are loaded at the poison's own image size (`base['image_size']`),
  so not through `data.load_from_config`."""
  train, test = data.load_dataset(
      config.dataset, data_dir=config.data_dir or None,
      download=config.download, max_train=config.max_train or None,
      max_test=config.max_test or None, seed=0, image_size=base['image_size'])
  train, validation = data.carve_validation(train, config.validation_fraction,
                                            seed)
  path = os.path.join(workdir, 'poisons',
                      f'{run_key(base)}-seed{seed}.pkl')
  if os.path.exists(path):
    with open(path, 'rb') as f:
      return pickle.load(f), validation
  with sweep.timed() as timing:  # compilation apart (the study's policy)
    manipulation = get_manipulation(name)(train, test, seed=seed,
                                          **base['manipulation_settings'])
  manipulation.info.setdefault('seconds', timing.seconds)
  manipulation.info.setdefault('compile_seconds', timing.compile_seconds)
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + '.tmp', 'wb') as f:
      pickle.dump(manipulation, f)
    os.replace(path + '.tmp', path)
  return manipulation, validation


def method_budgets(config, method_name: str) -> list:
  """The budgets a method runs at (§5): every config budget for a method that
  trains for a share of the original steps (`Method.takes_budget`), else
  [None] (it runs once at its own settings)."""
  if get_method(method_name).takes_budget:
    return list(config.budgets)
  return [None]


def method_hparams(config, method_name: str, budget: float | None):
  """(method, its hparams): one configuration per method, no search (§5):
  the full `config.hparams.<method>` (every field; the config states the
  study's own settings, e.g. SCRUB's), at `budget` for a budgeted method."""
  method = get_method(method_name)
  values = (config.hparams[method_name].to_dict()
            if method_name in config.hparams else {})
  if budget is not None:
    values['budget_fraction'] = budget
  return method, dataclasses.replace(method.hparams(), **values)


def _hparams_key(config, method_name: str) -> dict:
  return (config.hparams[method_name].to_dict()
          if method_name in config.hparams else {})


def _keys(config, base: dict, seed: int) -> dict:
  """(method, budget) -> run key for one (poison, seed)."""
  keys = {(name, None): run_key({**base, 'method': name, 'seed': seed})
          for name in REFERENCES}
  for method in config.methods:
    for budget in method_budgets(config, method):
      keys[(method, budget)] = run_key({
          **base, 'method': method, 'seed': seed, 'budget_fraction': budget,
          'hparams': _hparams_key(config, method)})
  return keys


@dataclasses.dataclass
class GroupSetup:
  """What every run of one (poison, seed) shares."""
  manipulation: object
  model: object
  seconds: dict          # 'none' (M_o), 'oracle' (M*): training seconds
  reference: dict        # their poison metrics
  metric_settings: poison_metrics_lib.MetricSettings
  task: UnlearnTask      # the identified poisons as S_f
  common: dict           # the fields every row of the group carries


def plan(config: ml_collections.ConfigDict, workdir: str) -> sweep.Plan:
  """The study's runs: one group per (poison type, seed) (sweep.py)."""
  validate_config(config)
  groups = [_group(config, workdir, name, seed)
            for name in config.poisons for seed in config.seeds]
  return sweep.Plan(STUDY, groups)


def run(config: ml_collections.ConfigDict, workdir: str,
        worker: sweep.Worker | None = None) -> list[dict]:
  """Runs (or resumes) this worker's share; returns the sweep's rows."""
  return sweep.execute(plan(config, workdir), workdir, worker).rows


def _group(config, workdir: str, name: str, seed: int) -> sweep.Group:
  """Poison `name` at `seed`: set-up (poisons, M_o, M*, their metrics) and
  the runs (the two references, every method at every budget)."""
  base = setting(config, name)
  setting_key = run_key(base)
  keys = _keys(config, base, seed)
  model_name, model_kwargs = poison_model(config, name)
  recipe = poison_recipe(config, name)
  identity = {'study': STUDY, 'manipulation': name, 'dataset': config.dataset,
              'model': model_name, 'seed': seed, 'setting_key': setting_key}
  where = f'{name} seed={seed}'
  # Curves: the first poison's first seed, every method at the middle budget
  # (a method without a budget at its one run), and M_o's training.
  curve_name = (f'{name}-seed{seed}' if (name, seed) == (
      config.poisons[0], config.seeds[0]) else None)
  curve_budget = curves.middle(config.budgets)

  def setup() -> GroupSetup:
    manipulation, validation = build_poisoned(config, workdir, name, seed,
                                              base)
    model = models.get_model(model_name, manipulation.train.num_classes,
                             **model_kwargs)
    meta = {'setting': base, 'seed': seed}
    forget = forget_lib.sample_forget(manipulation.manipulated,
                                      config.found_fraction, seed)
    with curves.original_recording(config, workdir, STUDY, curve_name, model,
                                   manipulation.train, forget,
                                   validation) as curve:
      (original, original_seconds), (oracle, oracle_seconds) = (
          sweep.original_and_oracle(workdir, setting_key, seed, model, recipe,
                                    manipulation, meta, original_curve=curve))
    metric_settings = poison_metrics_lib.MetricSettings(
        fresh_draws=config.fresh_draws, seed=seed)
    reference = {ref: poison_metrics_lib.poison_metrics(
        name, model, variables, manipulation, metric_settings)
                 for ref, variables in (('none', original), ('oracle', oracle))}
    task = UnlearnTask(
        model=model, original=original, train=manipulation.train,
        forget=forget,
        retain=forget_lib.retain_indices(len(manipulation.train), forget),
        validation=validation, recipe=recipe, cache={})
    common = {**identity,
              'n_manipulated': int(manipulation.manipulated.size),
              'poison_seconds': manipulation.info.get('seconds')}
    return GroupSetup(manipulation, model,
                      {'none': original_seconds, 'oracle': oracle_seconds},
                      reference, metric_settings, task, common)

  def reference_run(ref: str) -> sweep.Run:
    def measure(s: GroupSetup) -> dict:
      return {**s.common, 'method': ref, 'budget_fraction': None,
              'hparams': {}, 'seconds': s.seconds[ref], **s.reference[ref]}
    return sweep.Run(keys[(ref, None)], f'{where} {ref}', measure,
                     {**identity, 'method': ref, 'budget_fraction': None})

  def method_run(method_name: str, budget: float | None) -> sweep.Run:
    def measure(s: GroupSetup) -> dict:
      method, hparams = method_hparams(config, method_name, budget)
      recorder = curves.method_recorder(
          config, workdir, STUDY,
          curve_name if budget in (None, curve_budget) else None, method_name)
      with recorder(s.task) as task, sweep.timed() as timing:
        unlearned = as_unlearned(method.unlearn(
            task, hparams,
            sweep.seed_key(seed, f'unlearn/{method_name}/{budget}')))
        jax.block_until_ready(unlearned.variables)
      measured = poison_metrics_lib.poison_metrics(
          name, s.model, unlearned.variables, s.manipulation,
          s.metric_settings)
      return {
          **s.common, 'method': method_name, 'budget_fraction': budget,
          'n_forget': int(s.task.forget.size),
          'hparams': dataclasses.asdict(hparams), 'seconds': timing.seconds,
          'compile_seconds': timing.compile_seconds, **measured,
          **{f'method_{k}': v for k, v in unlearned.info.items()},
          **{f'{ref}_{metric}': s.reference[ref][metric]
             for ref in REFERENCES for metric in REFERENCE_METRICS
             if metric in s.reference[ref]}}
    return sweep.Run(keys[(method_name, budget)],
                     f'{where} {method_name} budget={budget}', measure,
                     {**identity, 'method': method_name,
                      'budget_fraction': budget})

  runs = [reference_run(ref) for ref in REFERENCES]
  runs += [method_run(m, b) for m in config.methods
           for b in method_budgets(config, m)]
  return sweep.Group(where, setup, runs)
