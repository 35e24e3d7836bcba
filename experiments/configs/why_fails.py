r"""Why unlearning fails to remove poisons (Pawelczyk et al. 2024, §6, App. C).

Default (embedded digits for Fig. 4, App. C.2's synthetic task at its full
size for Fig. 5, 5 seeds; ~2 min on 2 CPU cores):

  python experiments/why_fails.py --workdir=/tmp/why_fails

Named configs (`--config=experiments/configs/why_fails.py:NAME`):

  smoke   a seconds-long run for tests

Override anything: --config.seeds=0,1,2 --config.parts=model_shift
--config.model_shift.poisons=ic,gaussian --config.gradient_alignment.l2=0.03
(comma-separated lists become tuples); a field that does not exist is a
one-line error naming the valid ones. The study runs no registered
unlearning method (exact unlearning is a refit of the convex model), so this
config has no `hparams`.

Run keys: a (poison, seed, β) row is keyed by the extractor's and the
model-shift settings (`studies.why_fails.model_shift_setting`), a (seed,
forget set) row by `config.gradient_alignment`; `parts`, `seeds` and the
lists of poisons and β choose runs without changing any run's key.

`curves_every` (default 5; 0 = off): training and unlearning curves (loss,
accuracy on S_f and on the validation split every N steps) of one run per
method and of its M_o's training, as TensorBoard events in
`WORKDIR/tensorboard/` (`tensorboard --logdir=WORKDIR`) and JSON lines in
`WORKDIR/curves/` (the report's curves.png). The one run: none (no method
has a step loop): the feature extractor's training only.
"""

import ml_collections

BETAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.parts = ('model_shift', 'gradient_alignment')
  config.seeds = (0, 1, 2, 3, 4)   # App. C.2 averages 5 runs
  config.distributed = False

  # Hypothesis 1 (Fig. 4, App. C.1): the fixed feature extractor, trained
  # once (seed `feature_seed`) on the clean training split.
  config.dataset = 'digits'
  config.data_dir = ''
  config.download = False
  config.image_size = 8
  config.max_train = 0             # 0 = all (1438 digits)
  config.max_test = 0
  config.model = 'small_cnn'
  config.model_kwargs = ml_collections.ConfigDict({'width': 32})  # 64 features
  config.recipe = ml_collections.ConfigDict(dict(
      steps=600, batch_size=128, learning_rate=0.05, momentum=0.9,
      weight_decay=5e-4, warmup_fraction=0.01, schedule_stretch=1.25,
      eval_batch_size=1024))
  config.feature_seed = 0

  config.model_shift = ml_collections.ConfigDict(dict(
      poisons=('badnet', 'ic', 'gaussian'),
      num_poisons=64,              # ~4.5% of the digits (paper: 384 of 50000)
      betas=BETAS,
      # (1/n) Σ CE + (l2/2) ‖W‖² with n = |S_corr| fixed for every subset
      # (scikit-learn C = 1 / (l2 n)); L-BFGS until ‖∇f‖₂ < tol.
      l2=1e-3, tol=1e-8, max_iter=2000, memory_size=20,
      standardize=True,            # features z-scored with clean statistics
      badnet=dict(target_class=0, patch_size=0, position='bottom_right'),
      ic=dict(class_a=3, class_b=8),
      gaussian=dict(std=1.0),      # ε in units of each feature's std
  ))

  # Hypothesis 2 (Fig. 5, App. C.2): the synthetic linear-regression task.
  config.gradient_alignment = ml_collections.ConfigDict(dict(
      n=10000, dim=1000, signal_dim=50,
      low_std=1e-2,                # x[51:1000] ~ N(0, 10^-4)
      noise_std=0.1,               # label noise N(0, 10^-2)
      n_test=2000, data_seed=0,
      l2=1e-2,                     # ridge: ½ mean r² + (l2/2) ‖θ‖²
      num_poisons=1000,
      gradpc=dict(radius=1.0, steps=100, lr=1.0),   # ε_w = 1 (App. A.1.3)
      gc=dict(lr=0.1, epochs=500),  # η = 0.1, 500 epochs (App. A.1.3, C.2)
      gd=dict(lr=0.1, batch_size=1000, steps=500),
  ))

  config.curves_every = 5  # curve points every N steps (docstring); 0 = off

  if arg in (None, '', 'default'):
    pass
  elif arg == 'smoke':
    config.seeds = (0,)
    config.max_train = 400
    config.max_test = 200
    config.model_kwargs.width = 8
    config.recipe.steps = 30
    config.recipe.batch_size = 64
    config.model_shift.num_poisons = 16
    config.model_shift.betas = (0.5, 1.0)
    config.model_shift.poisons = ('badnet', 'gaussian')
    config.gradient_alignment.update(dict(
        n=1000, dim=100, signal_dim=10, n_test=200, num_poisons=100))
    config.gradient_alignment.gc.epochs = 50
    config.gradient_alignment.gradpc.steps = 20
    config.gradient_alignment.gd.update(dict(batch_size=100, steps=40))
  else:
    raise ValueError(f'Unknown config {arg!r}; valid: default, smoke')
  return config
