r"""RELOAD study (blind unlearning and remedial learning; RELOAD §4) configs.

Default (embedded 8×8 digits, SmallCNN width 16, the corrective recipe;
random 10%/30% forgetting, 100 in-class samples, the cross-pattern shortcut
with remedial learning; 7 methods and a second retrain as the noise floor;
5 seeds, about 5 minutes on 2 shared CPU cores, sized to stay within 15):

  python experiments/reload.py --workdir=/tmp/reload

Named configs (`--config=experiments/configs/reload.py:NAME`):

  smoke     a seconds-long run for tests
  cifar10   ResNet-18 on CIFAR-10: random 10%/30% and the cross-pattern
            shortcut (Table 3); needs the tfds data and an accelerator
  cifar100  ResNet-18 on CIFAR-100: random 10% (Table 1) and 30% (A.6)
  svhn      ResNet-18 on SVHN: 100 in-class samples (Table 2), random 10%

The paper gives no training recipe; the ResNet-18 settings follow the
authors' code defaults (projectavi/Reload `main.py`; see
unlearnjax/unlearn/reload.py): 182 epochs at learning rate 0.1, batch 128;
RELOAD fine-tunes 35 epochs (budget 0.19) at 0.01 (scale 0.1); GAR 10 + 10
epochs, GRDA 10 epochs (§4.3).

Override anything: --config.seeds=0,1,2 --config.methods=finetune,reload
--config.scenarios=random_10,cross_pattern --config.in_class.num_forget=50
--config.hparams.reload.priming_step_size=0 (lists: comma-separated).

`curves_every` (default 5; 0 = off): training and unlearning curves (loss,
accuracy on S_f and on the validation split every N steps) of one run per
method and of its M_o's training, as TensorBoard events in
`WORKDIR/tensorboard/` (`tensorboard --logdir=WORKDIR`) and JSON lines in
`WORKDIR/curves/` (the report's curves.png). The one run: the first
scenario's first seed.
"""

import ml_collections

from experiments.configs import common

METHODS = ('retrain', 'finetune', 'gar', 'grda', 'salun', 'fisher_forgetting',
           'scrub', 'reload')
SCENARIOS = ('random_10', 'random_30', 'in_class', 'cross_pattern')
# SCRUB without a search over α: the corrective benchmark code's defaults.
SCRUB_HPARAMS = common.SCRUB_WITHOUT_SEARCH


def _epochs_to_steps(epochs: int, num_train: int, batch_size: int) -> int:
  return epochs * -(-num_train // batch_size)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  common.digits_data(config)
  common.small_cnn_digits(config)  # the corrective study's model and recipe

  config.scenarios = SCENARIOS
  config.random_10 = ml_collections.ConfigDict({'forget_share': 0.1})
  config.random_30 = ml_collections.ConfigDict({'forget_share': 0.3})
  # 100 samples of one class (Table 2); -1: the class is drawn per seed. A
  # digits class has ~130 training samples, so this is ~3/4 of it (SVHN: <2%).
  config.in_class = ml_collections.ConfigDict({'num_forget': 100,
                                               'forget_class': -1})
  # Two classes drawn per seed; 3×3 cross on 8×8 (5×5 on 32×32).
  config.cross_pattern = ml_collections.ConfigDict(dict(
      shortcut_classes=(), cross_size=0, corners=('bottom_right',),
      cross_value=0.5))

  # 'retrain' is the reference M* itself (always measured, never re-run).
  config.methods = METHODS
  config.seeds = (0, 1, 2, 3, 4)
  # Also train a second M* from another initialisation ('retrain_rerun'): the
  # gaps between two exact unlearners, the floor every gap is read against.
  config.noise_floor = True
  # Every registered method's hparams (so every --config.hparams.M.field=
  # override works); each method runs at exactly these settings: the
  # method's defaults, but SCRUB's stated ones.
  config.hparams = common.method_hparams(scrub=SCRUB_HPARAMS)
  config.mia_features = ('entropy',)   # the RELOAD/SCRUB code's MIA feature
  # Seconds exclude XLA compilation (sweep.timed); besides, run each method
  # once untimed per process before its timed run, so that Cost compares
  # computation with M*'s warmed training: at digits scale a method's first
  # call costs about as much as the unlearning itself, beyond compilation.
  config.warm_up = True
  config.distributed = False

  config.curves_every = 5  # curve points every N steps (docstring); 0 = off

  if arg in (None, '', 'default'):
    pass
  elif arg == 'smoke':
    config.max_train = 300
    config.max_test = 200
    config.recipe.steps = 30
    config.recipe.batch_size = 64
    config.seeds = (0,)
    config.methods = ('retrain', 'finetune', 'reload')
    config.in_class.num_forget = 10
    config.cross_pattern.shortcut_classes = (1, 7)
  elif arg in ('cifar10', 'cifar100', 'svhn'):
    config.dataset = {'cifar10': 'cifar10', 'cifar100': 'cifar100',
                      'svhn': 'svhn_cropped'}[arg]
    config.image_size = 32
    config.model = 'resnet18'
    config.model_kwargs = ml_collections.ConfigDict()
    num_train = 73257 if arg == 'svhn' else 50000
    num_train = int(round(num_train * (1 - config.validation_fraction)))
    config.recipe.batch_size = 128
    config.recipe.learning_rate = 0.1
    config.recipe.steps = _epochs_to_steps(182, num_train, 128)
    config.seeds = (0, 1, 2)
    config.noise_floor = False    # a second ResNet-18 retrain per setting
    config.hparams = common.method_hparams(
        reload={'budget_fraction': 35 / 182, 'learning_rate_scale': 0.1},
        gar={'budget_fraction': 20 / 182, 'ascent_share': 0.5},
        grda={'budget_fraction': 10 / 182},
        scrub=SCRUB_HPARAMS)
    if arg == 'cifar10':
      config.scenarios = ('random_10', 'random_30', 'cross_pattern')
    elif arg == 'cifar100':
      config.scenarios = ('random_10', 'random_30')
    else:
      config.scenarios = ('in_class', 'random_10')
  else:
    raise ValueError(f'Unknown config {arg!r}; valid: default, smoke, '
                     'cifar10, cifar100, svhn')
  return config
