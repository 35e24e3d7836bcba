"""Append-only JSONL results with run keys: resumable sweeps.

A run's identity (study, method, manipulation, dataset, model, found
fraction, seed, and the settings that change its numbers) is hashed into
`run_key`; rerunning a sweep skips keys already in the file. Each row is one
`write` + flush + fsync of a full line; a line cut by a kill is ignored on
read and the file is mended before the next append.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings


def run_key(identity: dict) -> str:
  blob = json.dumps(identity, sort_keys=True, default=str)
  return hashlib.sha1(blob.encode()).hexdigest()[:20]


class ResultsFile:
  """`<workdir>/results.jsonl`: read finished runs, append new ones."""

  def __init__(self, path: str):
    self.path = path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

  def rows(self) -> list[dict]:
    if not os.path.exists(self.path):
      return []
    rows = []
    with open(self.path) as f:
      for number, line in enumerate(f, 1):
        line = line.strip()
        if not line:
          continue
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError:
          warnings.warn(f'{self.path}:{number}: ignoring an unreadable line '
                        '(a run cut off while writing); it will be rerun.')
    return rows

  def done_keys(self) -> set[str]:
    return {row['run_key'] for row in self.rows() if 'run_key' in row}

  def append(self, row: dict) -> None:
    if 'run_key' not in row:
      raise ValueError('a results row needs a run_key')
    line = json.dumps(row, sort_keys=True, default=_json_default) + '\n'
    needs_newline = False
    if os.path.exists(self.path) and os.path.getsize(self.path) > 0:
      with open(self.path, 'rb') as f:
        f.seek(-1, os.SEEK_END)
        needs_newline = f.read(1) != b'\n'
    with open(self.path, 'a') as f:
      f.write(('\n' if needs_newline else '') + line)
      f.flush()
      os.fsync(f.fileno())


def _json_default(value):
  if hasattr(value, 'item'):
    return value.item()
  if hasattr(value, 'tolist'):
    return value.tolist()
  return str(value)


SHARD_PATTERN = 'results-worker*.jsonl'


def shard_paths(workdir: str) -> list[str]:
  """`results.jsonl` and every worker's shard (`sweep`), in a fixed order."""
  import glob  # pylint: disable=g-import-not-at-top
  main = os.path.join(workdir, 'results.jsonl')
  shards = sorted(glob.glob(os.path.join(workdir, SHARD_PATTERN)))
  return [p for p in [main] + shards if os.path.exists(p)]


def read_rows(workdir: str, include_diverged: bool = True) -> list[dict]:
  """Every finished row of a workdir: `results.jsonl` merged with the
  workers' shards, one row per run key (the first written wins), rows
  without a run key skipped with a warning naming the line."""
  rows, seen = [], set()
  for path in shard_paths(workdir):
    for number, row in enumerate(ResultsFile(path).rows(), 1):
      key = row.get('run_key') if isinstance(row, dict) else None
      if key is None:
        warnings.warn(f'{path}: row {number} has no run_key; skipped (it '
                      'is not a row this library wrote).')
        continue
      if key in seen:
        continue
      seen.add(key)
      if include_diverged or not row.get('diverged'):
        rows.append(row)
  return rows


def done_keys(workdir: str) -> set[str]:
  """Run keys finished in any shard of `workdir`."""
  return {row['run_key'] for row in read_rows(workdir)}
