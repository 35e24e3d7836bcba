"""Machine unlearning fails to remove data poisoning (Pawelczyk et al. 2024, §4-5).

For each poison type (Gaussian, targeted gradient matching, indiscriminate
gradient canceling) and seed: poison the training data, train the original
M_o on it and retrain M* without the poisons (orbax checkpoints in the
workdir), then hand the identified poisons (`found_fraction` of S_m; the
paper: all of them) to every method at every compute budget (a share of the
original training steps, §5: 2 … 10%) and measure what is left
(`metrics.poisons`): test accuracy, GUS and TPR@FPR for Gaussian poisons,
target success for targeted ones. One row per finished run in
`<workdir>/results.jsonl`; 'none' (M_o) and 'oracle' (M*, retrained) rows are the
references. Finished runs are skipped on rerun; crafted poisons are cached
in `<workdir>/poisons/` so a resumed run does not craft them again.

A poison type may override the shared model, image size and recipe (its
ConfigDict's `model`, `model_kwargs`, `image_size`, `recipe`): the Gaussian
poison needs a model that memorises pixel noise (docs/DEVELOPING.md).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import pickle
import time

import jax
import ml_collections
import tqdm

from unlearnjax import data, forget as forget_lib, models, training
from unlearnjax.errors import ConfigError
from unlearnjax.manipulations import get_manipulation
from unlearnjax.metrics import poisons as poison_metrics_lib
from unlearnjax.results import ResultsFile, run_key
from unlearnjax.sweep import seed_key, trained_model
from unlearnjax.unlearn import UnlearnTask, get_method
from unlearnjax.unlearn.base import as_unlearned

STUDY = 'poison_fails'
# Keys of a poison's ConfigDict that are not the manipulation's arguments.
SETTING_KEYS = ('model', 'model_kwargs', 'image_size', 'recipe')


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


def poison_model(config, name: str) -> tuple[str, dict]:
  own = config[name]
  model = own.get('model', None) or config.model
  kwargs = (own.model_kwargs.to_dict() if own.get('model_kwargs', None)
            is not None else config.model_kwargs.to_dict())
  return model, kwargs


def poison_recipe(config, name: str) -> training.Recipe:
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
  accepted = inspect.signature(get_manipulation(name)).parameters
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
  """(Manipulation, validation); a crafted manipulation is cached on disk."""
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
  start = time.time()
  manipulation = get_manipulation(name)(train, test, seed=seed,
                                        **base['manipulation_settings'])
  manipulation.info.setdefault('seconds', time.time() - start)
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + '.tmp', 'wb') as f:
      pickle.dump(manipulation, f)
    os.replace(path + '.tmp', path)
  return manipulation, validation


def method_budgets(config, method_name: str) -> list:
  """The budgets a method runs at: every config budget for a method with a
  `budget_fraction` field, else [None] (it runs once at its own settings)."""
  method = get_method(method_name)
  if 'budget_fraction' in {f.name for f in dataclasses.fields(method.hparams)}:
    return list(config.budgets)
  return [None]


def method_hparams(config, method_name: str, budget: float | None):
  method = get_method(method_name)
  overrides = dict(config.hparams.get(method_name, {}))
  if budget is not None:
    overrides['budget_fraction'] = budget
  return method, dataclasses.replace(method.hparams(), **overrides)


def _keys(config, base: dict, seed: int) -> dict:
  """(method, budget) -> run key for one (poison, seed)."""
  keys = {(name, None): run_key({**base, 'method': name, 'seed': seed})
          for name in ('none', 'oracle')}
  for method in config.methods:
    overrides = config.hparams.get(method, {})
    for budget in method_budgets(config, method):
      keys[(method, budget)] = run_key({
          **base, 'method': method, 'seed': seed, 'budget_fraction': budget,
          'hparams': overrides and overrides.to_dict()})
  return keys


def run(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Runs (or resumes) the study; returns the rows of this sweep."""
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  results = ResultsFile(os.path.join(workdir, 'results.jsonl'))
  done = results.done_keys()
  is_writer = jax.process_index() == 0
  plan = [(name, seed) for name in config.poisons for seed in config.seeds]
  keys_of = {(name, seed): _keys(config, setting(config, name), seed)
             for name, seed in plan}
  progress = tqdm.tqdm(total=sum(len(k) for k in keys_of.values()),
                       desc=STUDY, unit='run', disable=not is_writer,
                       dynamic_ncols=True)
  current = set()
  for name, seed in plan:
    base = setting(config, name)
    keys = keys_of[(name, seed)]
    current.update(keys.values())
    if set(keys.values()) <= done:
      progress.update(len(keys))
      continue
    progress.set_postfix_str(f'{name} seed={seed}: poisoning')
    manipulation, validation = build_poisoned(config, workdir, name, seed,
                                              base)
    model_name, kwargs = poison_model(config, name)
    model = models.get_model(model_name, manipulation.train.num_classes,
                             **kwargs)
    recipe = poison_recipe(config, name)
    setting_key = run_key(base)
    meta = {'setting': base, 'seed': seed}
    progress.set_postfix_str(f'{name} seed={seed}: training M_o, M*')
    original, original_seconds = trained_model(
        workdir, f'{setting_key}-seed{seed}-original', model, recipe,
        manipulation.train, None, seed_key(seed, 'original'), meta)
    oracle, oracle_seconds = trained_model(
        workdir, f'{setting_key}-seed{seed}-oracle', model, recipe,
        manipulation.train, manipulation.clean_indices,
        seed_key(seed, 'oracle'), meta)
    settings = poison_metrics_lib.MetricSettings(
        fresh_draws=config.fresh_draws, seed=seed)
    common = {'study': STUDY, 'manipulation': name, 'dataset': config.dataset,
              'model': model_name, 'seed': seed, 'setting_key': setting_key,
              'n_manipulated': int(manipulation.manipulated.size),
              'poison_seconds': manipulation.info.get('seconds')}
    reference = {}
    for method_name, variables, seconds in (
        ('none', original, original_seconds),
        ('oracle', oracle, oracle_seconds)):
      measured = poison_metrics_lib.poison_metrics(name, model, variables,
                                                   manipulation, settings)
      reference[method_name] = measured
      key = keys[(method_name, None)]
      if key not in done and is_writer:
        results.append({**common, 'method': method_name,
                        'budget_fraction': None, 'hparams': {},
                        'seconds': seconds, **measured, 'run_key': key})
      progress.update(1)

    forget = forget_lib.sample_forget(manipulation.manipulated,
                                      config.found_fraction, seed)
    task = UnlearnTask(
        model=model, original=original, train=manipulation.train,
        forget=forget,
        retain=forget_lib.retain_indices(len(manipulation.train), forget),
        validation=validation, recipe=recipe, cache={})
    for method_name in config.methods:
      for budget in method_budgets(config, method_name):
        key = keys[(method_name, budget)]
        progress.set_postfix_str(f'{name} seed={seed} {method_name} '
                                 f'budget={budget}')
        method, hparams = method_hparams(config, method_name, budget)
        if key in done:
          progress.update(1)
          continue
        start = time.time()
        unlearned = as_unlearned(method.unlearn(
            task, hparams, seed_key(seed, f'unlearn/{method_name}/{budget}')))
        seconds = time.time() - start
        measured = poison_metrics_lib.poison_metrics(
            name, model, unlearned.variables, manipulation, settings)
        if is_writer:
          results.append({
              **common, 'method': method_name, 'budget_fraction': budget,
              'n_forget': int(task.forget.size),
              'hparams': dataclasses.asdict(hparams), 'seconds': seconds,
              **measured, **{f'method_{k}': v
                             for k, v in unlearned.info.items()},
              **{f'{ref}_{metric}': reference[ref][metric]
                 for ref in reference for metric in
                 ('test_accuracy', 'gus_z', 'tpr_at_fpr_0.01',
                  'target_success') if metric in reference[ref]},
              'run_key': key})
        progress.update(1)
  progress.close()
  return [row for row in results.rows() if row['run_key'] in current]
