"""Checkpoints through orbax; the only module that imports it."""

from __future__ import annotations

import os

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
