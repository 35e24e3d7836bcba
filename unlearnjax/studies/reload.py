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

On the sweep engine (`unlearnjax/sweep.py`): one group per (scenario, seed),
whose set-up builds D, M_o with g_D and M*; its runs are 'original' (M_o),
'retrain' (M*), with `noise_floor` 'retrain_rerun' (a second M* from another
initialisation), then one per method of `config.methods`, each at the one
configuration `config.hparams.<method>` gives (RELOAD compares methods at
fixed settings, no search).

Per (scenario, seed): the original M_o is trained on D and g_D = ∇θL(D) is
computed at it once and stored next to its orbax checkpoint
(`original_and_data_gradient`; RELOAD Alg. 1 assumes g_D was cached at the
end of training), so reruns and every scenario on the same D reuse it. The
reference M* ("Retrain") is trained on D_new with the original recipe and
checkpointed; its wall time is the Cost denominator. Every method then
unlearns from M_o and is measured against M* (`metrics.reload.reload_metrics`
+ the retain-vs-test MIA of `metrics.mia.model_retain_test_attack`,
ΔFMIA = |FMIA − M*'s|).

Cost (§4.2) = a method's wall time / M*'s training wall time. Both exclude
XLA compilation: a method's run is timed with `sweep.timed` (compilation is
recorded apart as `compile_seconds`), and M*'s training step runs once
before it is timed (`compile_training_step`; `sweep.trained_model` stores
its wall time with the checkpoint). With `config.warm_up` each method also
runs once untimed per process first (`warm_up`: the first call's costs that
are not compilation, as long as the unlearning at digits scale). RELOAD's
g_D is cached with M_o and not counted (Alg. 1 takes it as given; rows carry
`data_gradient_seconds` and, for RELOAD, `cost_with_data_gradient`).
Curves (`unlearnjax.curves`, `config.curves_every`): the first scenario's
first seed, every method's timed run (not its warm-up; points untimed) and
M_o's training (when that group trains it).

Remedial learning (a scenario with corrected rows): the methods whose
registry entry has `reads_corrected` (RELOAD, GAR, GRDA) read
`task.corrected` themselves; every other method has no notion of it and is
handed the remedial view of the task, whose retain set is D_new (retain rows
followed by the corrected rows): fine-tuning then fine-tunes on D_new, as the
paper's FT baseline does (§4.3).

One row per finished run in the workdir's results file(s)
(`results.read_rows`); finished runs are skipped on rerun, and a run that
raises FloatingPointError (e.g. GAR's unbounded ascent) is a row with
`diverged: true`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import math
import os
from typing import Callable

import jax
import ml_collections
import numpy as np

from unlearnjax import checkpoint, curves, data, models, parallel, sweep
from unlearnjax import training
from unlearnjax.data.split import Split
from unlearnjax.errors import ConfigError
from unlearnjax.manipulations import cross_pattern as cross_pattern_lib
from unlearnjax.manipulations.base import host_rng
from unlearnjax.metrics import mia as mia_lib
from unlearnjax.metrics import reload as reload_metrics_lib
from unlearnjax.results import run_key
from unlearnjax.unlearn import UnlearnTask, get_method
from unlearnjax.unlearn import reload as reload_lib
from unlearnjax.unlearn.base import as_unlearned
from unlearnjax.unlearn.registry import check_all_overrides

STUDY = 'reload'
REFERENCES = ('original', 'retrain')
# A second M*, trained from another initialisation and batch order: how far
# two exact unlearners lie apart (config.noise_floor).
NOISE_FLOOR = 'retrain_rerun'


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
  try:
    check_all_overrides(config.hparams)
  except ValueError as e:
    raise ConfigError(str(e)) from e
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
  """(method, hparams): the one configuration the study runs a method at,
  every field from `config.hparams.<method>` (which lists them all; a field
  it leaves out keeps the method's default). RELOAD §4 compares methods at
  fixed settings, with no search."""
  method = get_method(method_name)
  fields = (config.hparams[method_name].to_dict()
            if method_name in config.hparams else {})
  return method, dataclasses.replace(method.hparams(), **fields)


def _methods(config) -> list[str]:
  """config.methods without the references ('retrain' is M* itself)."""
  seen = []
  for name in names(config.methods):
    if name not in REFERENCES + (NOISE_FLOOR,) and name not in seen:
      seen.append(name)
  return seen


def _keys(config, base: dict, seed: int) -> dict:
  """method -> run key for one (scenario, seed); a method's key holds the
  hparams it runs at."""
  references = REFERENCES + ((NOISE_FLOOR,) if config.get('noise_floor', False)
                             else ())
  keys = {name: run_key({**base, 'method': name, 'seed': seed})
          for name in references}
  for method in _methods(config):
    keys[method] = run_key({
        **base, 'method': method, 'seed': seed,
        'hparams': dataclasses.asdict(method_hparams(config, method)[1])})
  return keys


def data_gradient_batch_size(config) -> int:
  """The batch size RELOAD sums g_D over (`gradient_batch_size`, 0: the
  recipe's), so the stored g_D is the one `reload.unlearn` would compute."""
  _, hparams = method_hparams(config, 'reload')
  return int(hparams.gradient_batch_size) or int(config.recipe.batch_size)


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
    data_gradient_seconds: the time computing g_D took (when it ran),
      without compilation (`sweep.timed`).
    data_gradient_computed: False when g_D was restored from its checkpoint.
    batch_size: the batch size g_D was summed over.
    data_gradient_compile_seconds: the compilation time apart, when known.
  """
  variables: training.Variables
  seconds: float
  data_gradient: dict | None
  data_gradient_seconds: float | None
  data_gradient_computed: bool
  batch_size: int
  data_gradient_compile_seconds: float | None = None


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
                               with_gradient: bool = True,
                               curve=None) -> Original:
  """Trains (or restores) M_o on D and g_D = ∇θL(D) at it (RELOAD Alg. 1:
  g_D is cached when training ends), both orbax checkpoints under
  `<workdir>/checkpoints/`; g_D is recomputed only when its checkpoint is
  missing or belongs to another M_o (its meta holds M_o's fingerprint).
  `curve` records M_o's training when it runs."""
  variables, seconds = sweep.trained_model(workdir, name, model, recipe,
                                           train, None, key, meta,
                                           curve=curve)
  if not with_gradient:
    return Original(variables, seconds, None, None, False, batch_size)
  path = data_gradient_path(workdir, name, batch_size)
  identity = fingerprint(variables['params'])
  like = jax.tree.map(lambda p: np.zeros(np.shape(p), np.float32),
                      variables['params'])
  restored = checkpoint.restore_if_valid(path, like)
  if restored is not None:
    gradient, saved = restored
    if (saved.get('original_fingerprint') == identity
        and saved.get('batch_size') == batch_size):
      return Original(variables, seconds, gradient, saved['seconds'], False,
                      batch_size, saved.get('compile_seconds'))
  with sweep.timed() as timing:
    gradient = jax.block_until_ready(reload_lib.full_data_gradient(
        model, variables, train, batch_size=batch_size))
  if jax.process_index() == 0:
    checkpoint.save(path, gradient, {
        **meta, 'what': 'g_D = sum over batches of grad mean CE at M_o',
        'batch_size': batch_size, 'rows': len(train),
        'original_fingerprint': identity, 'seconds': timing.seconds,
        'compile_seconds': timing.compile_seconds})
  return Original(variables, seconds, gradient, timing.seconds, True,
                  batch_size, timing.compile_seconds)


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


def warm_up(method, task: UnlearnTask, hparams, key: jax.Array
            ) -> sweep.Timing:
  """One untimed run of `method` on a copy of `task` whose cache additions
  are thrown away; returns its `sweep.Timing`. `sweep.timed` already leaves
  compilation out of a run's `seconds`, but a method's first call in a
  process also pays first-dispatch costs that are not compilation (executable
  loading, first buffer allocations, builders' caches): at digits scale they
  are as long as the unlearning itself (smoke: 0.30 s cold vs 0.17 s warm for
  RELOAD), while M*'s timed training runs on a step that already ran
  (`compile_training_step`). Warming each method once per process keeps the
  Cost ratio (§4.2) computation against computation (`config.warm_up`). A
  divergence here is left for the timed run to report."""
  with sweep.timed() as timing:
    try:
      output = as_unlearned(method.unlearn(
          dataclasses.replace(task, cache=dict(task.cache)), hparams, key))
      jax.block_until_ready(output.variables)
    except FloatingPointError:
      pass
  return timing


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


@dataclasses.dataclass
class ScenarioSetup:
  """What every run of one (scenario, seed) shares: D and its task, M_o
  (with g_D), M* and its own measurements (its MIA is what ΔFMIA is read
  against), and the fields every row of the group carries."""
  scenario: Scenario
  model: object
  test: Split
  task: UnlearnTask
  new: reload_lib.NewData
  original: Original
  retrained: training.Variables
  retrain_seconds: float
  retrain_measured: dict
  common: dict
  features: tuple[str, ...]

  @property
  def retrain_mia(self) -> dict:
    return {k: self.retrain_measured[k] for k in ('fmia', 'fmia_auc')}

  def measure(self, variables, seconds) -> dict:
    """§4.2's metrics of `variables` against M* (`measure`)."""
    return measure(self.model, variables, self.task, self.retrained,
                   self.test, self.scenario, seconds=seconds,
                   retrain_seconds=self.retrain_seconds,
                   retrain_mia=self.retrain_mia, features=self.features)


def plan(config: ml_collections.ConfigDict, workdir: str) -> sweep.Plan:
  """The study's runs: one group per (scenario, seed) (sweep.py), in seed
  order, so that consecutive groups reuse the seed's data; groups whose M_o
  is the same (the scenarios on the clean D) share one task cache."""
  validate_config(config)
  recipe = recipe_from_config(config)
  loaded = {}   # seed -> (train, validation, test), the latest seed only
  caches = {}   # M_o checkpoint name -> the task cache its groups share
  warmed = set() if config.get('warm_up', True) else None  # methods warmed

  def load(seed):
    if seed not in loaded:
      loaded.clear()
      loaded[seed] = data.load_from_config(config, seed)
    return loaded[seed]

  groups = [_group(config, workdir, recipe, name, seed, load, caches, warmed)
            for seed in config.seeds for name in names(config.scenarios)]
  return sweep.Plan(STUDY, groups)


def run(config: ml_collections.ConfigDict, workdir: str,
        worker: sweep.Worker | None = None) -> list[dict]:
  """Runs (or resumes) this worker's share; returns the sweep's rows."""
  return sweep.execute(plan(config, workdir), workdir, worker).rows


def _group(config, workdir, recipe, name, seed, load, caches,
           warmed) -> sweep.Group:
  """One (scenario, seed); `warmed`: the methods already warmed up in this
  process (None: no warm-up)."""
  base = setting(config, name)
  setting_key = run_key(base)
  keys = _keys(config, base, seed)
  methods = _methods(config)
  features = names(config.mia_features)
  batch_size = data_gradient_batch_size(config)
  retrain_name = f'{setting_key}-seed{seed}-retrain'
  meta = {'setting': base, 'seed': seed}
  identity = {'study': STUDY, 'scenario': name, 'dataset': config.dataset,
              'model': config.model, 'seed': seed,
              'setting_key': setting_key}
  # Curves: the first scenario's first seed (every method and M_o's
  # training, if this group is the one that trains it).
  curve_name = (f'{name}-seed{seed}' if (name, seed) == (
      names(config.scenarios)[0], config.seeds[0]) else None)

  def setup() -> ScenarioSetup:
    train, validation, test = load(seed)
    scenario = SCENARIOS[name](train, test, seed, **config[name].to_dict())
    model = models.get_model(config.model, scenario.train.num_classes,
                             **config.model_kwargs)
    original_name = original_checkpoint_name(config, scenario.data_identity,
                                             seed)
    with curves.original_recording(config, workdir, STUDY, curve_name, model,
                                   scenario.train, scenario.forget,
                                   validation) as curve:
      original = original_and_data_gradient(
          workdir, original_name, model, recipe, scenario.train,
          sweep.seed_key(seed, 'original'),
          {'data': original_identity(config, scenario.data_identity),
           'seed': seed},
          batch_size=batch_size, with_gradient='reload' in methods,
          curve=curve)
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
    if not checkpoint.exists(os.path.join(workdir, 'checkpoints',
                                          retrain_name)):
      compile_training_step(model, recipe, new.split)
    retrained, retrain_seconds = sweep.trained_model(
        workdir, retrain_name, model, recipe, new.split, new.new_rows,
        sweep.seed_key(seed, 'retrain'), meta)
    common = {
        **identity, 'remedial': scenario.corrected is not None,
        'n_train': len(scenario.train), 'n_forget': int(task.forget.size),
        'n_new': int(new.new_rows.size), 'n_test': len(test),
        'original_seconds': original.seconds,
        'retrain_seconds': retrain_seconds,
        'data_gradient_seconds': original.data_gradient_seconds,
        'data_gradient_compile_seconds': original.data_gradient_compile_seconds,
        'data_gradient_computed': original.data_gradient_computed,
        **scenario.info}
    retrain_measured = measure(model, retrained, task, retrained, test,
                               scenario, seconds=retrain_seconds,
                               retrain_seconds=retrain_seconds,
                               retrain_mia=None, features=features)
    retrain_measured.update(delta_fmia=0.0, delta_fmia_auc=0.0)
    return ScenarioSetup(scenario, model, test, task, new, original,
                         retrained, retrain_seconds, retrain_measured, common,
                         features)

  def reference_row(s: ScenarioSetup, seconds, measured) -> dict:
    return {**s.common, 'hparams': {}, 'seconds': seconds, **measured}

  def original_run() -> sweep.Run:
    def measure_original(s: ScenarioSetup) -> dict:
      return reference_row(s, s.original.seconds,
                           s.measure(s.original.variables, seconds=None))
    return sweep.Run(keys['original'], f'{name} seed={seed} M_o',
                     measure_original, {**identity, 'method': 'original'})

  def retrain_run() -> sweep.Run:
    def measure_retrain(s: ScenarioSetup) -> dict:
      return reference_row(s, s.retrain_seconds, s.retrain_measured)
    return sweep.Run(keys['retrain'], f'{name} seed={seed} M*',
                     measure_retrain, {**identity, 'method': 'retrain'})

  def noise_floor_run() -> sweep.Run:
    def measure_rerun(s: ScenarioSetup) -> dict:
      rerun, seconds = sweep.trained_model(
          workdir, f'{setting_key}-seed{seed}-{NOISE_FLOOR}', s.model, recipe,
          s.new.split, s.new.new_rows, sweep.seed_key(seed, NOISE_FLOOR),
          meta)
      return reference_row(s, seconds, s.measure(rerun, seconds=seconds))
    return sweep.Run(keys[NOISE_FLOOR], f'{name} seed={seed} second M*',
                     measure_rerun, {**identity, 'method': NOISE_FLOOR})

  def method_run(method_name) -> sweep.Run:
    method, hparams = method_hparams(config, method_name)

    def measure_method(s: ScenarioSetup) -> dict:
      first = warmed is not None and method_name not in warmed
      if first:
        warmed.add(method_name)
      return unlearn_and_measure(
          s, method, hparams,
          sweep.seed_key(seed, f'unlearn/{name}/{method_name}'), warm=first,
          curve=curves.method_recorder(config, workdir, STUDY, curve_name,
                                       method_name))
    return sweep.Run(keys[method_name], f'{name} seed={seed} {method_name}',
                     measure_method,
                     {**identity, 'method': method_name,
                      'hparams': dataclasses.asdict(hparams)})

  runs = [original_run(), retrain_run()]
  if NOISE_FLOOR in keys:
    runs.append(noise_floor_run())
  runs += [method_run(m) for m in methods]
  # Scenarios of a seed may start from one M_o (and its g_D): one worker.
  return sweep.Group(f'{name} seed={seed}', setup, runs, shares=f'seed{seed}')


def unlearn_and_measure(s: ScenarioSetup, method, hparams, key: jax.Array,
                        *, warm: bool = False, curve=curves.no_curve) -> dict:
  """One method from M_o, timed without compilation (`sweep.timed`; Cost,
  §4.2) after an untimed `warm_up` when `warm`, measured against M*. A
  method that does not read `task.corrected` gets the remedial view (§4.3).
  `curve` (`curves.method_recorder`) records the timed run (its points
  untimed)."""
  method_task = s.task if method.reads_corrected else remedial_view(s.task)
  warming = warm_up(method, method_task, hparams, key) if warm else None
  with curve(method_task) as run_task, sweep.timed() as timing:
    unlearned = as_unlearned(method.unlearn(run_task, hparams, key))
    jax.block_until_ready(unlearned.variables)
  row = {**s.common, 'hparams': dataclasses.asdict(hparams),
         'seconds': timing.seconds, 'compile_seconds': timing.compile_seconds,
         'warm_up_seconds': warming.seconds if warming else None,
         'warm_up_compile_seconds': (warming.compile_seconds if warming
                                     else None),
         'task_view': ('own' if method_task is s.task else
                       'remedial (retain = D_new)'),
         **s.measure(unlearned.variables, seconds=timing.seconds),
         **{f'method_{k}': v for k, v in unlearned.info.items()}}
  if method.name == 'reload' and s.original.data_gradient_seconds:
    row['cost_with_data_gradient'] = (
        (timing.seconds + s.original.data_gradient_seconds)
        / s.retrain_seconds)
  return row
