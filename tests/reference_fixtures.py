"""The authors' reference outputs (`tests/fixtures/reference/*.npz`) and the
tiny model they were computed on, rebuilt in Flax.

The `.npz` files are copied verbatim from `shared/reference-fixtures/`
(its README, reproduced in `tests/fixtures/reference/README.md`, says which
reference function produced each array, at which commit, and the tolerances
every equivalence test here uses). Tests read rows, weights and settings from
the files, never from constants, so they still pass when the fixtures are
regenerated with other weights and rows.
"""

from __future__ import annotations

import functools
import os

import flax.linen as nn
import jax
import numpy as np

FIXTURE_DIR = os.path.join(os.path.dirname(__file__), 'fixtures', 'reference')


@functools.lru_cache(maxsize=None)
def load(name: str) -> dict[str, np.ndarray]:
  """All arrays of `<name>.npz` (e.g. 'ssd'), as a plain dict."""
  with np.load(os.path.join(FIXTURE_DIR, f'{name}.npz')) as data:
    return {k: data[k] for k in data.files}


def tree(arrays: dict[str, np.ndarray], group: str) -> dict:
  """The flax-layout tree stored under `<group>/flax/...` (nested dicts)."""
  prefix = f'{group}/flax/'
  out: dict = {}
  for key, value in arrays.items():
    if not key.startswith(prefix):
      continue
    node = out
    *parents, leaf = key[len(prefix):].split('/')
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = np.asarray(value)
  if not out:
    raise KeyError(f'no group {group!r} in the fixture')
  return out


def params_tree(arrays, group: str) -> dict:
  """Only the `params` collection of a stored group (drops BN buffers)."""
  full = tree(arrays, group)
  return full['params'] if 'params' in full else full


class TinyNet(nn.Module):
  """The fixtures' model, exactly as their README writes it in Flax."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(4, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                use_bias=False, name='conv1')(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                     epsilon=1e-5, name='bn1')(x)
    x = nn.relu(x)
    x = nn.Conv(8, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                name='conv2')(x)
    x = nn.relu(x)
    x = x.mean(axis=(1, 2))
    return nn.Dense(10, name='fc')(x)


def model_and_data():
  """(model, variables {'params', 'batch_stats'}, images NHWC, labels, forget
  rows, retain rows) from `model_and_data.npz`."""
  d = load('model_and_data')
  variables = tree(d, 'weights')
  return (TinyNet(), variables, d['data/x_nhwc'].astype(np.float32),
          d['data/y'].astype(np.int32), d['data/forget_rows'].astype(np.int64),
          d['data/retain_rows'].astype(np.int64))


def scaled_atol(reference, factor: float = 1e-6) -> float:
  """The README's absolute part: `factor * max|ref|` over the whole array."""
  leaves = jax.tree.leaves(reference)
  return factor * max(float(np.max(np.abs(x))) for x in leaves)


def assert_tree_close(actual, reference, *, rtol, atol=None, atol_scale=None):
  """Leaf-wise allclose; `atol_scale` gives atol = scale·max|ref| per leaf."""
  ref_flat = jax.tree_util.tree_flatten_with_path(reference)[0]
  act_flat = dict(jax.tree_util.tree_flatten_with_path(actual)[0])
  assert len(act_flat) == len(ref_flat), (
      f'{len(act_flat)} leaves against the reference {len(ref_flat)}')
  for path, ref in ref_flat:
    act = np.asarray(act_flat[path])
    ref = np.asarray(ref)
    tol = atol if atol is not None else 0.0
    if atol_scale is not None:
      tol = atol_scale * float(np.max(np.abs(ref)))
    np.testing.assert_allclose(act, ref, rtol=rtol, atol=tol,
                               err_msg=jax.tree_util.keystr(path))
