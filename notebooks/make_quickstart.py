r"""Writes notebooks/quickstart.ipynb, the Colab quickstart (without outputs).

  python notebooks/make_quickstart.py

Edit the cells here, not in the notebook: tests/test_notebook.py checks that
the notebook is this script's output and runs it headless (smoke-sized).
"""

from __future__ import annotations

import os
import textwrap

import nbformat

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                    'quickstart.ipynb')

GOEL = ('Goel, Prabhu, Torr, Kumaraguru and Sanyal 2024, *Corrective '
        'Machine Unlearning*, '
        '[arXiv:2402.14015](https://arxiv.org/abs/2402.14015)')

# (id, kind, source): ids are fixed so that a regenerated notebook diffs
# only where a cell changed.
CELLS = [
    ('intro', 'markdown', f"""
# unlearnjax quickstart: corrective machine unlearning

A model was trained on data an adversary manipulated (here a BadNet
backdoor, or labels of two classes confused); the developer later finds
*some* of the manipulated samples and wants the model to behave as if it
had never seen the manipulation. That is **corrective unlearning**
({GOEL}).

This notebook
1. installs `unlearnjax`,
2. runs the corrective benchmark of Goel et al. §3 on the embedded digits
   (no download) and shows its Figure 2 and Table 1,
3. unlearns one model by hand with the library's API.

The whole default study takes about 10 to 15 minutes on a Colab CPU
runtime (2 cores).
"""),
    ('setup-md', 'markdown', """
## 1. Install

**Set `REPO`** to the URL of the unlearnjax repository you install from.
The cell clones it (the study's configs live in its `experiments/` folder,
which `pip` does not install) and installs the package with `pip`, with
JAX's CUDA wheels if the runtime has a GPU. Run from a checkout where
`unlearnjax` is already importable (e.g. in CI), it installs nothing.
If `pip` asks you to restart the runtime, do so and run the cells again.

`UNLEARNJAX_NOTEBOOK_SMOKE=1` in the environment runs everything at a
size that takes about a minute (the tests do); `UNLEARNJAX_NOTEBOOK_WORKDIR` says where
the study writes (default `./corrective`).
"""),
    ('setup', 'code', """
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys

REPO = 'https://github.com/<you>/unlearnjax'  # <- set this
SMOKE = os.environ.get('UNLEARNJAX_NOTEBOOK_SMOKE', '') not in ('', '0')
WORKDIR = (os.environ.get('UNLEARNJAX_NOTEBOOK_WORKDIR')
           or os.path.abspath('corrective'))


def is_checkout(path):
  return os.path.isfile(os.path.join(path, 'experiments', 'configs',
                                     'corrective.py'))


def find_checkout():
  \"\"\"The checkout of the importable unlearnjax, or one at or above the
  working directory, or None.\"\"\"
  if importlib.util.find_spec('unlearnjax') is not None:
    import unlearnjax
    root = os.path.dirname(os.path.dirname(os.path.abspath(
        unlearnjax.__file__)))
    if is_checkout(root):
      return root
  for path in (os.getcwd(), os.path.dirname(os.getcwd())):
    if is_checkout(path):
      return path
  return None


def run(*cmd):
  \"\"\"Runs a command; shows its output and raises if it fails.\"\"\"
  proc = subprocess.run(cmd, capture_output=True, text=True)
  print(proc.stdout[-3000:] + proc.stderr[-3000:], end='')
  proc.check_returncode()


REPO_DIR = find_checkout()
if REPO_DIR is None:
  REPO_DIR = os.path.abspath('unlearnjax')  # /content/unlearnjax in Colab
  if not is_checkout(REPO_DIR):
    if '<you>' in REPO:
      raise ValueError('Set REPO (top of this cell) to the URL of the '
                       'unlearnjax repository.')
    run('git', 'clone', '-q', '--depth=1', REPO, REPO_DIR)
if importlib.util.find_spec('unlearnjax') is None:
  extras = '[cuda12]' if shutil.which('nvidia-smi') else ''
  run(sys.executable, '-m', 'pip', 'install', '-q', REPO_DIR + extras)
  importlib.invalidate_caches()
sys.path.insert(0, REPO_DIR)  # the checkout: its experiments/configs/

import jax
print(f'unlearnjax from {REPO_DIR}; {jax.device_count()} '
      f'{jax.default_backend()} device(s); '
      f'{"smoke-sized" if SMOKE else "full"} run; workdir {WORKDIR}')
"""),
    ('study-md', 'markdown', """
## 2. The corrective benchmark (Goel et al. §3)

`experiments/configs/corrective.py` (its default, or `smoke` for a run of
about a minute) describes the study:

- **Manipulations** of the training set S_tr: *BadNet* (a trigger pixel
  stamped on 2% of the images, relabelled to class 0) and *interclass
  confusion* (half of the 3s and 8s swap labels). S_m is the set of
  manipulated samples.
- For each manipulation and seed the study trains the **original** M_o on
  S_tr and the **oracle** M* on S_tr without S_m (the model to match).
- The developer has found a share of S_m (the *found fraction*, 0.1 to 1,
  plus one sample: *one-shot*), the forget set S_f ⊆ S_m. Each method
  (retraining without S_f, finetuning, SSD, Bad Teacher, SCRUB) unlearns
  S_f from M_o; its hyper-parameters are searched with Goel's selection
  score (½·validation accuracy + ½·share of S_f whose prediction changed),
  which reads no test data.
- **Acc_corr** is the accuracy on the test data the manipulation affects,
  against the correct labels (e.g. triggered test images);
  **Acc_retain** the accuracy on the rest of the test set.

This is what `python experiments/corrective.py --workdir=WORKDIR` runs
(`unlearnjax.cli.run_and_report`): every config value checked, the study's
plan (`unlearnjax.studies.corrective.plan`) on the sweep engine
(`unlearnjax.sweep.execute`), then the report. Every finished run
is appended to `WORKDIR/results.jsonl`; running the cell again resumes
where it stopped.
"""),
    ('study', 'code', """
from absl import logging

from experiments.configs import corrective as corrective_configs
from unlearnjax import cli

logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint at INFO

config = corrective_configs.get_config('smoke' if SMOKE else None)
outcome = cli.run_and_report('corrective', config, WORKDIR)
print(f'{len(outcome.rows)} runs ({len(outcome.diverged)} diverged); '
      f'report: {outcome.written}')
"""),
    ('figures-md', 'markdown', """
### Figure 2 and Table 1

Figure 2: Acc_corr against the found fraction, per method, with M_o and M*
as references: how much of the manipulation each method removes when only
part of S_m is known. Goel et al. find that most methods need nearly all of
S_m; SSD removes the BadNet trigger from a small share but not the
interclass confusion. Table 1: the change in Acc_retain, i.e. what the
unlearning costs on the unaffected test data. `WORKDIR/report.md` has
these, the numbers behind the figure and Figure 3 (SSD's importance
ratios).
"""),
    ('figures', 'code', """
from IPython.display import Image, Markdown, display

display(Image(filename=os.path.join(WORKDIR, 'figure2.png')))
with open(os.path.join(WORKDIR, 'table1.md')) as f:
  display(Markdown(f.read()))
"""),
    ('by-hand-md', 'markdown', """
## 3. Unlearning one model by hand

The same steps through the library's API: load the embedded digits (and a
clean validation split, the only data model selection reads), poison the
training set with BadNet, train M_o with Goel's recipe (SGD, momentum 0.9,
weight decay 5e-4; steps scaled to the digits).
"""),
    ('by-hand-train', 'code', """
import jax

from unlearnjax import data, forget, metrics, models, training
from unlearnjax.manipulations import get_manipulation
from unlearnjax.selection import select_with_goel_score
from unlearnjax.unlearn import UnlearnTask, get_method

train, test = data.load_dataset('digits')
train, validation = data.carve_validation(train, 0.1, seed=0)
poisoned = get_manipulation('badnet')(train, test, seed=0,
                                      poison_fraction=0.02)
model = models.get_model('small_cnn', 10, width=16)
recipe = training.Recipe(steps=40 if SMOKE else 600,
                         batch_size=64 if SMOKE else 128, learning_rate=0.05)
original = training.fit(model, recipe, poisoned.train, jax.random.key(0))
print(f'|S_tr| = {len(poisoned.train)}, |S_m| = {poisoned.manipulated.size}')
"""),
    ('by-hand-unlearn-md', 'markdown', """
Half of the poisons are found (S_f). The `UnlearnTask` holds everything a
method may read; `get_method` takes any registered name (`'retrain'`,
`'finetune'`, `'ssd'`, `'scrub'`, … see `unlearnjax.unlearn.METHODS`).
SSD (Foster et al.'s selective synaptic dampening) runs over Goel's grid,
and the selection score picks one configuration. For BadNet, Acc_retain is
the clean test accuracy and Acc_corr the accuracy on triggered test images
against their true labels.
"""),
    ('by-hand-unlearn', 'code', """
found = forget.sample_forget(poisoned.manipulated, 0.5, seed=0)
task = UnlearnTask(model=model, original=original, train=poisoned.train,
                   forget=found,
                   retain=forget.retain_indices(len(poisoned.train), found),
                   validation=validation, recipe=recipe)
method = get_method('ssd')
selected = select_with_goel_score(method, task, jax.random.key(1))
print(f'{method.display_name} picked {selected.hparams}')
for name, variables in [('before (M_o)', original),
                        (f'after ({method.display_name})',
                         selected.variables)]:
  accs = metrics.corrective_accuracies(model, variables, poisoned)
  print(f"{name:14s} acc_retain={accs['acc_retain']:.3f} "
        f"acc_corr={accs['acc_corr']:.3f}")
"""),
    ('next-md', 'markdown', """
## Next

- Other settings: `corrective_configs.get_config('digits_3seeds')`, or
  `'cifar10'` (Goel's CIFAR-10 setting; needs the TFDS data and an
  accelerator); any field can be changed on the config before
  `cli.run_and_report`.
- The other studies run the same way: `cli.run_and_report('potion',
  potion_config, workdir)` (and `reload`, `pgu`, `poison_fails`,
  `why_fails`); see the README.
"""),
]


def build() -> nbformat.NotebookNode:
  cells = []
  for cell_id, kind, source in CELLS:
    source = textwrap.dedent(source).strip('\n')
    make = (nbformat.v4.new_markdown_cell if kind == 'markdown'
            else nbformat.v4.new_code_cell)
    cells.append(make(source, id=cell_id))
  notebook = nbformat.v4.new_notebook(cells=cells, metadata={
      'kernelspec': {'name': 'python3', 'display_name': 'Python 3',
                     'language': 'python'},
      'language_info': {'name': 'python'},
      'colab': {'provenance': [], 'toc_visible': True},
  })
  nbformat.validate(notebook)
  return notebook


def main() -> None:
  nbformat.write(build(), PATH)
  print(f'wrote {PATH}')


if __name__ == '__main__':
  main()
