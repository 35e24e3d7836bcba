"""The RELOAD study (Newatia et al., blind unlearning; RELOAD §4.2-4.3,
Tables 1-3; SPEC.md "RELOAD", Metrics "NA, ΔFA, ΔFE, NSKL, FSKL, Cost").

Scenarios (a small registry, `SCENARIOS`: name -> a function building the
training data D, the forget rows, the corrected rows or None, and extra test
splits; a new scenario is one function plus one line):

* `random_10`, `random_30` (§4.2, Table 1, A.6): a uniform share of D forgotten.
* `in_class` (§4.2, Table 2): `num_forget` samples of one class.
* `cross_pattern` (§4.3, Table 3): a cross in the corner of every training
  image of two classes (labels kept); remedial learning with
  D_new = retain ∪ corrected (the clean originals of the forget rows).

Per (scenario, seed): the original M_o is trained on D and g_D = ∇θL(D) is
computed at it once and stored next to its orbax checkpoint
(`original_and_data_gradient`; RELOAD Alg. 1 assumes g_D was cached at the
end of training), so reruns and every scenario on the same D reuse it. The
reference M* ("Retrain") is trained on D_new with the original recipe and
checkpointed; its wall time is the Cost denominator. Every method of
`config.methods` then unlearns from M_o and is measured against M*
(`metrics.reload.reload_metrics` + the retain-vs-test MIA of
`metrics.mia.model_retain_test_attack`, ΔFMIA = |FMIA − M*'s|).

Cost (§4.2) = a method's wall time / M*'s training wall time. Both exclude
XLA compilation: M*'s training step is compiled before it is timed
(`compile_training_step`) and each method runs once untimed per process
before its timed run (`warm_up`, `config.warm_up`); RELOAD's g_D is cached
with M_o and not counted (Alg. 1 takes it as given; rows carry
`data_gradient_seconds` and, for RELOAD, `cost_with_data_gradient`).

Remedial learning (a scenario with corrected rows): RELOAD, GAR and GRDA
read `task.corrected` themselves (`REMEDIAL_METHODS`); every other method has
no notion of it and is handed the remedial view of the task, whose retain
set is D_new (retain rows followed by the corrected rows): fine-tuning then
fine-tunes on D_new, as the paper's FT baseline does (§4.3).

One row per finished run in `<workdir>/results.jsonl` ('original' = M_o,
'retrain' = M*, with `noise_floor` 'retrain_rerun' = a second M* from another
initialisation, then one per method); finished runs are skipped on rerun.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import math
import os
import time
from typing import Callable

import jax
import ml_collections
import numpy as np
import tqdm

from unlearnjax import checkpoint, data, models, parallel, training
from unlearnjax.data.split import Split
from unlearnjax.errors import ConfigError
from unlearnjax.manipulations import cross_pattern as cross_pattern_lib
from unlearnjax.manipulations.base import host_rng
from unlearnjax.metrics import mia as mia_lib
from unlearnjax.metrics import reload as reload_metrics_lib
from unlearnjax.results import ResultsFile, run_key
from unlearnjax.sweep import seed_key, trained_model
from unlearnjax.unlearn import UnlearnTask, get_method
from unlearnjax.unlearn import reload as reload_lib
from unlearnjax.unlearn.base import as_unlearned

STUDY = 'reload'
REFERENCES = ('original', 'retrain')
# A second M*, trained from another initialisation and batch order: how far
# two exact unlearners lie apart (config.noise_floor).
NOISE_FLOOR = 'retrain_rerun'
# Methods that read `task.corrected` (D_new = retain ∪ corrected) themselves.
REMEDIAL_METHODS = ('reload', 'gar', 'grda')


# ----------------------------------------------------------------------------
# Scenarios
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scenario:
  """What one scenario hands the study.

  Attributes:
    train: D, the training set as M_o saw it.
    forget: sorted rows of `train` to forget (D_forget).
    corrected: None, or the corrected versions of the forget rows (same
      order) for remedial learning (D_new = retain ∪ corrected).
    evaluation: extra test splits, name -> split; each row gets
      `<name>_accuracy`.
    data_identity: None when D is the clean training set (the scenarios
      then share M_o and g_D), else what makes D differ from it.
    info: scenario facts copied into every row (e.g. the forgotten class).
  """
  train: Split
  forget: np.ndarray
  corrected: Split | None = None
  evaluation: dict = dataclasses.field(default_factory=dict)
  data_identity: dict | None = None
  info: dict = dataclasses.field(default_factory=dict)


def random_forget(train: Split, test: Split, seed: int, *,
                  forget_share: float) -> Scenario:
  """RELOAD §4.2, Table 1 (10%) and A.6 (30%): a uniform share of D."""
  del test
  if not 0 < forget_share < 1:
    raise ConfigError(f'forget_share must be in (0, 1), got {forget_share}')
  size = max(1, int(round(forget_share * len(train))))
  rows = host_rng(seed, 'reload/random_forget').choice(len(train), size,
                                                        replace=False)
  return Scenario(train, np.sort(rows), info={'forget_share': forget_share})


def in_class_forget(train: Split, test: Split, seed: int, *,
                    num_forget: int, forget_class: int = -1) -> Scenario:
  """RELOAD §4.2, Table 2: `num_forget` random samples of one class
  (`forget_class`; -1: drawn with the seed)."""
  rng = host_rng(seed, 'reload/in_class')
  if forget_class < 0:
    forget_class = int(rng.integers(train.num_classes))
  if not 0 <= forget_class < train.num_classes:
    raise ConfigError(f'forget_class {forget_class} is not a class of '
                      f'{train.num_classes}')
  members = np.flatnonzero(train.labels == forget_class)
  if not 0 < num_forget < members.size:
    raise ConfigError(
        f'in_class.num_forget={num_forget}, but class {forget_class} has '
        f'{members.size} training samples: forget between 1 and '
        f'{members.size - 1} of them (some must stay in D_new).')
  rows = np.sort(rng.choice(members, num_forget, replace=False))
  evaluation = {'forget_class_test': test.subset(
      np.flatnonzero(test.labels == forget_class))}
  return Scenario(train, rows, evaluation=evaluation,
                  info={'forget_class': forget_class,
                        'class_size': int(members.size)})


def cross_pattern(train: Split, test: Split, seed: int, **settings
                  ) -> Scenario:
  """RELOAD §4.3, Table 3: the cross-pattern shortcut on every image of two
  classes; D_forget = all of them, corrected = their clean originals.

  Extra test splits: `triggered_test` (every test image with the cross, true
  labels: the paper's D_new^(test,§)) and `affected` (only the test images of
  the OTHER classes with the cross: where the shortcut misleads).
  """
  manipulation = cross_pattern_lib.manipulate(train, test, seed=seed,
                                              **settings)
  forget = manipulation.manipulated
  return Scenario(
      manipulation.train, forget, corrected=manipulation.corrected(forget),
      evaluation={'triggered_test': manipulation.triggered_test,
                  'affected': manipulation.affected},
      data_identity={'manipulation': 'cross_pattern', 'seed': seed,
                     **settings},
      info={'shortcut_classes': manipulation.info['shortcut_classes'],
            'cross_size': manipulation.info['cross_size']})


# name -> builder(train, test, seed, **config.<name>).
SCENARIOS: dict[str, Callable[..., Scenario]] = {
    'random_10': random_forget,
    'random_30': random_forget,
    'in_class': in_class_forget,
    'cross_pattern': cross_pattern,
}


# ----------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------


def names(value) -> tuple[str, ...]:
  """A tuple of names from a config list; an item holding commas (what
  `--config.scenarios=random_10,in_class` gives a tuple field) is split."""
  if isinstance(value, str):
    value = (value,)
  return tuple(part.strip() for item in value for part in str(item).split(',')
               if part.strip())


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks names and ranges before any work; raises ConfigError."""
  try:
    data.check_dataset(config.dataset)
    models.get_model(config.model, 10, **config.model_kwargs)
    for name in names(config.methods):
      get_method(name)
    training.Recipe(**config.recipe.to_dict())
  except (ValueError, TypeError) as e:
    raise ConfigError(str(e)) from e
  scenarios, methods = names(config.scenarios), names(config.methods)
  if not scenarios:
    raise ConfigError('config.scenarios is empty')
  if not methods:
    raise ConfigError('config.methods is empty')
  if not config.seeds:
    raise ConfigError('config.seeds is empty')
  for name in scenarios:
    if name not in SCENARIOS:
      raise ConfigError(f'Unknown scenario {name!r}; valid names: '
                        f'{", ".join(SCENARIOS)}.')
    if name not in config:
      raise ConfigError(f'config.{name} (the settings of scenario {name!r}) '
                        'is missing')
    accepted = inspect.signature(SCENARIOS[name]).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
      valid = set(accepted) - {'train', 'test', 'seed'}
      unknown = set(config[name]) - valid
      if unknown:
        raise ConfigError(f'config.{name} has unknown fields '
                          f'{sorted(unknown)}; valid: {sorted(valid)}')
  for name in ('random_10', 'random_30'):
    if name in scenarios and not 0 < config[name].get('forget_share', -1) < 1:
      raise ConfigError(f'config.{name}.forget_share must be in (0, 1), got '
                        f'{config[name].get("forget_share", None)!r}')
  if 'in_class' in scenarios and config.in_class.get('num_forget', 0) < 1:
    raise ConfigError('config.in_class.num_forget must be >= 1, got '
                      f'{config.in_class.get("num_forget", None)!r}')
  for name in config.hparams:
    if name not in methods:
      continue
    fields = {f.name for f in dataclasses.fields(get_method(name).hparams)}
    unknown = set(config.hparams[name]) - fields
    if unknown:
      raise ConfigError(f'config.hparams.{name} has unknown fields '
                        f'{sorted(unknown)}; valid: {sorted(fields)}')
  for feature in names(config.mia_features):
    if feature not in mia_lib.ATTACK_FEATURES:
      raise ConfigError(f'Unknown MIA feature {feature!r}; valid: '
                        f'{mia_lib.ATTACK_FEATURES}')


def recipe_from_config(config) -> training.Recipe:
  return training.Recipe(**config.recipe.to_dict())


def data_setting(config) -> dict:
  """What makes D (before a scenario changes it), the model and recipe."""
  return {
      'study': STUDY, 'dataset': config.dataset, 'image_size': config.image_size,
      'max_train': config.max_train, 'max_test': config.max_test,
      'validation_fraction': config.validation_fraction,
      'model': config.model, 'model_kwargs': config.model_kwargs.to_dict(),
      'recipe': config.recipe.to_dict(),
  }


def setting(config, scenario: str) -> dict:
  """What makes the numbers of a (scenario, seed) what they are."""
  return {**data_setting(config), 'scenario': scenario,
          'scenario_settings': config[scenario].to_dict(),
          'mia_features': list(names(config.mia_features))}


def method_hparams(config, method_name: str):
  method = get_method(method_name)
  overrides = dict(config.hparams.get(method_name, {}))
  return method, dataclasses.replace(method.hparams(), **overrides)


def _methods(config) -> list[str]:
  """config.methods without the references ('retrain' is M* itself)."""
  seen = []
  for name in names(config.methods):
    if name not in REFERENCES + (NOISE_FLOOR,) and name not in seen:
      seen.append(name)
  return seen


def _keys(config, base: dict, seed: int) -> dict:
  """method -> run key for one (scenario, seed)."""
  references = REFERENCES + ((NOISE_FLOOR,) if config.get('noise_floor', False)
                             else ())
  keys = {name: run_key({**base, 'method': name, 'seed': seed})
          for name in references}
  for method in _methods(config):
    overrides = config.hparams.get(method, {})
    keys[method] = run_key({**base, 'method': method, 'seed': seed,
                            'hparams': overrides and overrides.to_dict()})
  return keys


def data_gradient_batch_size(config) -> int:
  """The batch size RELOAD sums g_D over (`gradient_batch_size`, 0: the
  recipe's), so the stored g_D is the one `reload.unlearn` would compute."""
  reload_overrides = config.hparams.get('reload', {})
  return (int(reload_overrides.get('gradient_batch_size', 0))
          or int(config.recipe.batch_size))


# ----------------------------------------------------------------------------
# M_o with g_D, and M*
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Original:
  """M_o and what RELOAD caches with it.

  Attributes:
    variables: M_o's variables.
    seconds: the wall time of its training (when it ran).
    data_gradient: g_D = Σ_batches ∇θ mean-CE at M_o (a params tree), or None.
    data_gradient_seconds: the time computing g_D took (when it ran).
    data_gradient_computed: False when g_D was restored from its checkpoint.
    batch_size: the batch size g_D was summed over.
  """
  variables: training.Variables
  seconds: float
  data_gradient: dict | None
  data_gradient_seconds: float | None
  data_gradient_computed: bool
  batch_size: int


def fingerprint(tree) -> str:
  """sha1 of every leaf's bytes (tree order): ties g_D to the exact M_o."""
  digest = hashlib.sha1()
  for leaf in jax.tree.leaves(tree):
    leaf = np.ascontiguousarray(np.asarray(leaf))
    digest.update(str((leaf.shape, leaf.dtype)).encode())
    digest.update(leaf.tobytes())
  return digest.hexdigest()[:20]


def original_identity(config, data_identity: dict | None) -> dict:
  """What makes M_o: the data setting and how D differs from the clean
  training set (None: it does not, so those scenarios share M_o and g_D)."""
  return {**data_setting(config), 'data': data_identity or 'clean'}


def original_checkpoint_name(config, data_identity: dict | None,
                             seed: int) -> str:
  return (f'{run_key(original_identity(config, data_identity))}'
          f'-seed{seed}-original')


def data_gradient_path(workdir: str, name: str, batch_size: int) -> str:
  """`<workdir>/checkpoints/<name>-data_gradient-b<batch>`: beside M_o's."""
  return os.path.join(workdir, 'checkpoints',
                      f'{name}-data_gradient-b{batch_size}')


def original_and_data_gradient(workdir: str, name: str, model, recipe,
                               train: Split, key: jax.Array, meta: dict, *,
                               batch_size: int,
                               with_gradient: bool = True) -> Original:
  """Trains (or restores) M_o on D and g_D = ∇θL(D) at it (RELOAD Alg. 1:
  g_D is cached when training ends), both orbax checkpoints under
  `<workdir>/checkpoints/`; g_D is recomputed only when its checkpoint is
  missing or belongs to another M_o (its meta holds M_o's fingerprint)."""
  variables, seconds = trained_model(workdir, name, model, recipe, train,
                                     None, key, meta)
  if not with_gradient:
    return Original(variables, seconds, None, None, False, batch_size)
  path = data_gradient_path(workdir, name, batch_size)
  identity = fingerprint(variables['params'])
  if checkpoint.exists(path):
    like = jax.tree.map(lambda p: np.zeros(np.shape(p), np.float32),
                        variables['params'])
    gradient, saved = checkpoint.restore(path, like)
    if (saved.get('original_fingerprint') == identity
        and saved.get('batch_size') == batch_size):
      return Original(variables, seconds, gradient, saved['seconds'], False,
                      batch_size)
  start = time.time()
  gradient = reload_lib.full_data_gradient(model, variables, train,
                                           batch_size=batch_size)
  gradient_seconds = time.time() - start
  if jax.process_index() == 0:
    checkpoint.save(path, gradient, {
        **meta, 'what': 'g_D = sum over batches of grad mean CE at M_o',
        'batch_size': batch_size, 'rows': len(train),
        'original_fingerprint': identity, 'seconds': gradient_seconds})
  return Original(variables, seconds, gradient, gradient_seconds, True,
                  batch_size)


def remedial_view(task: UnlearnTask) -> UnlearnTask:
  """The task for a method that does not read `task.corrected`: `train` holds
  D followed by the corrected rows and `retain` is D_new (retain rows, then
  the corrected ones); forget rows keep their meaning (§4.3: FT fine-tunes
  on D_new). Its own cache: its `train` differs from the task's."""
  if task.corrected is None:
    return task
  new = reload_lib.new_data(task)
  return dataclasses.replace(task, train=new.split, retain=new.new_rows,
                             corrected=None, cache={})


def new_split(task: UnlearnTask) -> Split:
  """D_new as one split."""
  new = reload_lib.new_data(task)
  return new.split.subset(new.new_rows)


def compile_training_step(model, recipe, split: Split) -> None:
  """One throwaway step of the recipe's jitted training step, so that M*'s
  timed training (the Cost denominator) never includes XLA compilation,
  also when M_o was restored from its checkpoint in this process."""
  variables = training.init_variables(model, jax.random.key(0),
                                      split.image_shape)
  state = parallel.replicate(training.create_train_state(
      variables, training.make_optimizer(recipe)))
  take = np.arange(recipe.batch_size) % len(split)
  batch = parallel.shard_batch({'image': split.images[take],
                                'label': split.labels[take]})
  jax.block_until_ready(training.jitted_train_step(model, recipe)(state,
                                                                  batch))


def warm_up(method, task: UnlearnTask, hparams, key: jax.Array) -> None:
  """One untimed run of `method` on a copy of `task` whose cache additions
  are thrown away, so that the timed run's Cost counts computation, not XLA
  compilation (M*'s training reuses M_o's compiled step, §4.2 "Cost").
  A divergence here is left for the timed run to report."""
  try:
    output = as_unlearned(method.unlearn(
        dataclasses.replace(task, cache=dict(task.cache)), hparams, key))
    jax.block_until_ready(output.variables)
  except FloatingPointError:
    pass


# ----------------------------------------------------------------------------
# Measuring
# ----------------------------------------------------------------------------


def _nan_to_none(value):
  return None if isinstance(value, float) and math.isnan(value) else value


def measure(model, variables, task: UnlearnTask, retrained, test: Split,
            scenario: Scenario, *, seconds, retrain_seconds, retrain_mia,
            features) -> dict:
  """RELOAD §4.2 metrics of `variables` against M* (`retrained`), the MIA
  on D_forget (members: D_new, non-members: test) and test accuracies."""
  measured = reload_metrics_lib.reload_metrics(
      model, variables, retrained, task, seconds, retrain_seconds)
  attack = mia_lib.model_retain_test_attack(
      model, variables, new_split(task), test, task.forget_split,
      features=features)
  measured.update({
      'fmia': attack.mia, 'fmia_auc': attack.forget_auc,
      'mia_attack_auc': attack.attack_auc,
      'test_accuracy': training.accuracy(model, variables, test),
  })
  if retrain_mia is not None:
    measured['delta_fmia'] = abs(attack.mia - retrain_mia['fmia'])
    measured['delta_fmia_auc'] = abs(attack.forget_auc
                                     - retrain_mia['fmia_auc'])
  for name, split in scenario.evaluation.items():
    measured[f'{name}_accuracy'] = training.accuracy(model, variables, split)
  return {k: _nan_to_none(v) for k, v in measured.items()}


# ----------------------------------------------------------------------------
# The study
# ----------------------------------------------------------------------------


def load_data(config, seed: int):
  """(train, validation, test) of one seed: the validation carve depends on
  it; the clean data do not."""
  train, test = data.load_dataset(
      config.dataset, data_dir=config.data_dir or None,
      download=config.download, max_train=config.max_train or None,
      max_test=config.max_test or None, seed=0, image_size=config.image_size)
  train, validation = data.carve_validation(train, config.validation_fraction,
                                            seed)
  return train, validation, test


def run(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Runs (or resumes) the study; returns the rows of this sweep."""
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  results = ResultsFile(os.path.join(workdir, 'results.jsonl'))
  done = results.done_keys()
  is_writer = jax.process_index() == 0
  recipe = recipe_from_config(config)
  methods = _methods(config)
  features = names(config.mia_features)
  batch_size = data_gradient_batch_size(config)
  plan = [(seed, name) for seed in config.seeds
          for name in names(config.scenarios)]
  keys_of = {(seed, name): _keys(config, setting(config, name), seed)
             for seed, name in plan}
  progress = tqdm.tqdm(total=sum(len(k) for k in keys_of.values()),
                       desc=STUDY, unit='run', disable=not is_writer,
                       dynamic_ncols=True)
  current = set()
  loaded = {}       # seed -> (train, validation, test)
  caches = {}       # M_o checkpoint name -> shared task cache
  warmed = set()    # methods already compiled in this process
  for seed, name in plan:
    keys = keys_of[(seed, name)]
    current.update(keys.values())
    if set(keys.values()) <= done:
      progress.update(len(keys))
      continue
    base = setting(config, name)
    setting_key = run_key(base)
    if seed not in loaded:
      loaded.clear()
      loaded[seed] = load_data(config, seed)
    train, validation, test = loaded[seed]
    progress.set_postfix_str(f'{name} seed={seed}: building D')
    scenario = SCENARIOS[name](train, test, seed, **config[name].to_dict())
    model = models.get_model(config.model, scenario.train.num_classes,
                             **config.model_kwargs)
    original_name = original_checkpoint_name(config, scenario.data_identity,
                                             seed)
    meta = {'setting': base, 'seed': seed}
    progress.set_postfix_str(f'{name} seed={seed}: M_o and g_D')
    original = original_and_data_gradient(
        workdir, original_name, model, recipe, scenario.train,
        seed_key(seed, 'original'),
        {'data': original_identity(config, scenario.data_identity),
         'seed': seed},
        batch_size=batch_size, with_gradient='reload' in methods)
    task = UnlearnTask(
        model=model, original=original.variables, train=scenario.train,
        forget=scenario.forget,
        retain=np.setdiff1d(np.arange(len(scenario.train)), scenario.forget),
        validation=validation, recipe=recipe,
        cache=caches.setdefault(original_name, {}),
        corrected=scenario.corrected)
    if original.data_gradient is not None:
      reload_lib.store_data_gradient(task, original.data_gradient, batch_size)
    new = reload_lib.new_data(task)
    progress.set_postfix_str(f'{name} seed={seed}: retraining M*')
    if not checkpoint.exists(os.path.join(
        workdir, 'checkpoints', f'{setting_key}-seed{seed}-retrain')):
      compile_training_step(model, recipe, new.split)
    retrained, retrain_seconds = trained_model(
        workdir, f'{setting_key}-seed{seed}-retrain', model, recipe,
        new.split, new.new_rows, seed_key(seed, 'retrain'), meta)

    common = {
        'study': STUDY, 'scenario': name, 'dataset': config.dataset,
        'model': config.model, 'seed': seed, 'setting_key': setting_key,
        'remedial': scenario.corrected is not None,
        'n_train': len(scenario.train), 'n_forget': int(task.forget.size),
        'n_new': int(new.new_rows.size), 'n_test': len(test),
        'original_seconds': original.seconds,
        'retrain_seconds': retrain_seconds,
        'data_gradient_seconds': original.data_gradient_seconds,
        'data_gradient_computed': original.data_gradient_computed,
        **scenario.info}
    measure_kwargs = dict(retrain_seconds=retrain_seconds, features=features)
    retrain_measured = measure(model, retrained, task, retrained, test,
                               scenario, seconds=retrain_seconds,
                               retrain_mia=None, **measure_kwargs)
    retrain_mia = {k: retrain_measured[k] for k in ('fmia', 'fmia_auc')}
    retrain_measured.update(delta_fmia=0.0, delta_fmia_auc=0.0)
    original_measured = measure(model, original.variables, task, retrained,
                                test, scenario, seconds=None,
                                retrain_mia=retrain_mia, **measure_kwargs)
    for ref, measured, seconds in (
        ('original', original_measured, original.seconds),
        ('retrain', retrain_measured, retrain_seconds)):
      if keys[ref] not in done and is_writer:
        results.append({**common, 'method': ref, 'hparams': {},
                        'seconds': seconds, **measured,
                        'run_key': keys[ref]})
      progress.update(1)
    if NOISE_FLOOR in keys and keys[NOISE_FLOOR] not in done:
      progress.set_postfix_str(f'{name} seed={seed}: second M*')
      rerun, rerun_seconds = trained_model(
          workdir, f'{setting_key}-seed{seed}-{NOISE_FLOOR}', model, recipe,
          new.split, new.new_rows, seed_key(seed, f'{NOISE_FLOOR}'), meta)
      measured = measure(model, rerun, task, retrained, test, scenario,
                         seconds=rerun_seconds, retrain_mia=retrain_mia,
                         **measure_kwargs)
      if is_writer:
        results.append({**common, 'method': NOISE_FLOOR, 'hparams': {},
                        'seconds': rerun_seconds, **measured,
                        'run_key': keys[NOISE_FLOOR]})
      progress.update(1)
    elif NOISE_FLOOR in keys:
      progress.update(1)

    for method_name in methods:
      key = keys[method_name]
      if key in done:
        progress.update(1)
        continue
      progress.set_postfix_str(f'{name} seed={seed} {method_name}')
      method, hparams = method_hparams(config, method_name)
      method_task = (task if method_name in REMEDIAL_METHODS
                     else remedial_view(task))
      method_key = seed_key(seed, f'unlearn/{name}/{method_name}')
      if config.get('warm_up', True) and method_name not in warmed:
        progress.set_postfix_str(f'{name} seed={seed} {method_name} '
                                 '(warm-up)')
        warm_up(method, method_task, hparams, method_key)
        warmed.add(method_name)
      start = time.time()
      try:
        unlearned = as_unlearned(method.unlearn(method_task, hparams,
                                                method_key))
        jax.block_until_ready(unlearned.variables)
      except FloatingPointError as e:   # e.g. GAR's unbounded ascent
        row = {**common, 'method': method_name,
               'hparams': dataclasses.asdict(hparams),
               'seconds': time.time() - start, 'diverged': True,
               'error': str(e), 'run_key': key}
      else:
        seconds = time.time() - start
        measured = measure(model, unlearned.variables, task, retrained, test,
                           scenario, seconds=seconds, retrain_mia=retrain_mia,
                           **measure_kwargs)
        row = {**common, 'method': method_name,
               'hparams': dataclasses.asdict(hparams), 'seconds': seconds,
               'diverged': False,
               'task_view': ('own' if method_task is task else
                             'remedial (retain = D_new)'),
               **measured,
               **{f'method_{k}': v for k, v in unlearned.info.items()},
               'run_key': key}
        if method_name == 'reload' and original.data_gradient_seconds:
          row['cost_with_data_gradient'] = (
              (seconds + original.data_gradient_seconds) / retrain_seconds)
      if is_writer:
        results.append(row)
      progress.update(1)
  progress.close()
  return [row for row in results.rows() if row['run_key'] in current]
