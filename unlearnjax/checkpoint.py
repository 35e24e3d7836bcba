"""Checkpoints through orbax; the only module that imports it."""

from __future__ import annotations

import os
import time
import warnings

import jax
import orbax.checkpoint as ocp


def _manager(path: str) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.abspath(path),
      options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))


def save(path: str, tree, meta: dict, step: int = 0) -> None:
  """Saves `tree` (a pytree of arrays) and JSON `meta` under `path` as `step`;
  only the latest step is kept."""
  manager = _manager(path)
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)),
      force=True)
  manager.wait_until_finished()
  manager.close()


def exists(path: str) -> bool:
  if not os.path.isdir(path):
    return False
  manager = _manager(path)
  found = manager.latest_step() is not None
  manager.close()
  return found


def restore(path: str, like) -> tuple[dict, dict]:
  """Restores (the latest tree, shaped like `like`, and its meta)."""
  manager = _manager(path)
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f'No checkpoint under {path}')
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(
          jax.tree.map(ocp.utils.to_shape_dtype_struct, like)),
      meta=ocp.args.JsonRestore()))
  manager.close()
  return jax.device_get(restored['state']), dict(restored['meta'])


def restore_if_valid(path: str, like) -> tuple[dict, dict] | None:
  """`restore(path, like)`, or None when there is no checkpoint at `path`.

  A checkpoint that cannot be read (cut off by a kill, truncated, written by
  another version, shaped unlike `like`) is set aside, renamed to
  `<path>.corrupt-<time>`, with a warning that names it; None is returned
  so that the caller recomputes what it held.
  """
  try:
    if not exists(path):
      return None
    return restore(path, like)
  except Exception as e:  # pylint: disable=broad-except
    aside = f'{path.rstrip(os.sep)}.corrupt-{time.strftime("%Y%m%d-%H%M%S")}'
    if jax.process_index() == 0 and os.path.exists(path):
      os.replace(path, aside)
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    warnings.warn(f'checkpoint {path} cannot be read ({type(e).__name__}: '
                  f'{first}); set aside as {aside}, recomputing it.')
    return None
