r"""Potion (poison unlearning with PTN and XLF) configs.

Default (embedded digits; BadNet, sinusoidal signal and moving trigger at
|S_m| = 10/25/50; one seed; the README's results table):

  python experiments/potion.py --workdir=/tmp/potion

Named configs (`--config=experiments/configs/potion.py:NAME`):

  digits_2seeds  the default with seeds 0 and 1
  vit            a tiny ViT pretrained on the clean digits and fine-tuned on
                 the poisoned ones with AdamW (Potion §4.2); |S_m| = 25
  cifar10        Potion Table 1, CIFAR-10: the authors' ResNet-9
                 (resnet9_goel), 4000 steps, BadNet at |S_m| = 100/500/1000,
                 3 seeds (tfds data and an accelerator)
  cifar100       the same on CIFAR-100 with WRN-28-10 and 6000 steps
  expansion      issue 12: expand S_f, then correct (expand_ptn_xlf,
                 expand_ptn_xlf_exact, expand_retrain beside ptn_xlf,
                 ptn_xlf_exact and retrain) on the three
                 manipulations at |S_m| = 25, found fractions 0.1, 0.2, 0.5,
                 1 and one-shot, 3 seeds, no ρ part
  smoke          a seconds-long run for tests

Pretrained weights (Potion §4.2 fine-tunes an AugReg ViT-B/16): set
config.pretrain.npz_path to a local AugReg .npz (docs/models.md says where to
get one); the initial model is then those weights with a fresh head for the
task's classes, the position embedding resized to the images' patch grid,
instead of config.pretrain.steps of pretraining. The model must be that
checkpoint's ViT on 3-channel images (the digits are 1-channel), e.g.

  NPZ=/data/B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.npz
  python experiments/potion.py --config=experiments/configs/potion.py:vit \
    --config.dataset=cifar10 --config.model=vit_b16 \
    --config.pretrain.npz_path=$NPZ

(CIFAR's 32x32 images give ViT-B/16 a 2x2 patch grid; Potion's 224x224
needs images resized before they reach the study.)

Override anything, e.g. --config.sizes=25 --config.seeds=0,1
--config.hparams.ptn_xlf.estimator=exact --config.rho_sensitivity.rhos=0.1,0.2

`curves_every` (default 5; 0 = off): training and unlearning curves (loss,
accuracy on S_f and on the validation split every N steps) of one run per
method and of its M_o's training, as TensorBoard events in
`WORKDIR/tensorboard/` (`tensorboard --logdir=WORKDIR`) and JSON lines in
`WORKDIR/curves/` (the report's curves.png). The one run: the first
manipulation at the middle |S_m|, first seed, middle found fraction (main
part).
"""

import importlib.util
import os

import ml_collections


def _load_corrective():
  """The corrective config file beside this one (config files load by path)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      'corrective.py')
  spec = importlib.util.spec_from_file_location('corrective_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


corrective_configs = _load_corrective()

FRACTIONS = corrective_configs.FRACTIONS
# PTN methods with the authors' per-batch, retain-set importances (what
# Potion's numbers measure) and ptn_xlf_exact, the library's variant (per-
# sample importances, I_D over S_tr as Alg. 1 writes), side by side.
METHODS = ('ssd', 'ptn_ssd', 'ptn_lf', 'ptn_xlf', 'ptn_xlf_exact', 'retrain')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = corrective_configs.get_config()
  config.manipulations = ('badnet', 'sinusoid', 'moving')
  # |S_m|: Potion's 100/500/1000 are 0.2/1/2% of CIFAR's 50k; the 1,293
  # training digits get 10/25/50 (0.8/1.9/3.9%): fewer than 10 poisons leave
  # too few for the found-fraction grid.
  config.sizes = (10, 25, 50)
  config.badnet.position = 'bottom_right'
  # Frequency in cycles per pixel column: Potion's 0.025 on 224-pixel images
  # is 5.6 cycles; an 8-pixel digit gets one cycle (0.125). Amplitude 10% of
  # the maximum (Potion §4.2).
  config.sinusoid = ml_collections.ConfigDict(dict(
      target_class=0, frequency=0.125, amplitude_fraction=0.1, clip=True))
  config.moving = ml_collections.ConfigDict(dict(
      target_class=0, patch_size=0))
  config.methods = METHODS
  config.found_fractions = FRACTIONS
  config.one_shot = True
  config.seeds = (0,)
  config.search = True  # SSD: Goel's 50-configuration grid + Goel's score
  # Every method at its defaults, the authors' code (every row's `hparams`
  # shows them); SSD as the corrective config runs it.
  # Potion Fig. 8/9: PTN rerun at each ρ on BadNet, middle size, every
  # fraction of the grid.
  config.rho_sensitivity = ml_collections.ConfigDict(dict(
      methods=('ptn_xlf', 'ptn_lf'),
      rhos=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6),
      manipulations=('badnet',), sizes=(25,)))
  # Potion §4.2 fine-tunes a pretrained model; steps=0: train from scratch.
  # npz_path: start from the pretrained weights in this file instead (a ViT
  # model, AugReg .npz layout; docs/models.md); '' (default): not used.
  config.pretrain = ml_collections.ConfigDict(dict(
      steps=0, batch_size=128, learning_rate=1e-3, momentum=0.9,
      weight_decay=1e-4, warmup_fraction=0.05, schedule_stretch=1.0,
      eval_batch_size=1024, optimizer='adamw', npz_path=''))
  config.timing_size = 0  # Fig. 11 over this |S_m| (0: the middle size)

  config.curves_every = 5  # curve points every N steps (docstring); 0 = off

  if arg in (None, '', 'default'):
    pass
  elif arg == 'digits_2seeds':
    config.seeds = (0, 1)
  elif arg == 'vit':
    config.model = 'vit_tiny'
    config.model_kwargs = ml_collections.ConfigDict()
    config.pretrain.steps = 600  # AdamW 1e-3 on the clean digits: ~92%
    # Fine-tuning on the poisoned data: AdamW at Potion's 2.5e-4 (§4.2) for
    # 150 steps (~15 epochs; the BadNet trigger is learned by then).
    config.recipe.update(dict(steps=150, learning_rate=2.5e-4,
                              optimizer='adamw', weight_decay=1e-4,
                              warmup_fraction=0.05))
    config.sizes = (25,)  # one |S_m|: ~7 min on 2 CPU cores
  elif arg == 'expansion':
    config.methods = ('ptn_xlf', 'expand_ptn_xlf', 'ptn_xlf_exact',
                      'expand_ptn_xlf_exact', 'retrain', 'expand_retrain')
    config.sizes = (25,)
    config.found_fractions = (0.1, 0.2, 0.5, 1.0)
    config.seeds = (0, 1, 2)
    config.rho_sensitivity.manipulations = ()  # no ρ part
  elif arg == 'smoke':
    config.recipe.steps = 40
    config.recipe.batch_size = 64
    config.max_train = 400
    config.max_test = 200
    config.manipulations = ('badnet', 'moving')
    config.sizes = (8, 16)
    config.found_fractions = (0.5, 1.0)
    config.seeds = (0,)
    config.methods = ('ssd', 'ptn_xlf', 'retrain')
    config.search = False
    config.rho_sensitivity.methods = ('ptn_xlf',)
    config.rho_sensitivity.rhos = (0.1, 0.5)
    config.rho_sensitivity.sizes = (16,)
  elif arg in ('cifar10', 'cifar100'):
    config.dataset = arg
    config.model = 'resnet9_goel' if arg == 'cifar10' else 'wrn28_10'
    config.model_kwargs = ml_collections.ConfigDict()
    config.recipe.steps = 4000 if arg == 'cifar10' else 6000
    config.recipe.batch_size = 512
    config.recipe.learning_rate = 0.025
    config.manipulations = ('badnet',)
    config.sizes = (100, 500, 1000)
    config.seeds = (0, 1, 2)
    config.sinusoid.frequency = 0.025
    config.rho_sensitivity.sizes = (500,)
  else:
    raise ValueError(f'Unknown config {arg!r}; valid: default, digits_2seeds, '
                     'vit, expansion, smoke, cifar10, cifar100')
  return config
