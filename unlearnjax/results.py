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
    """The file's rows: `numbered_rows` without the line numbers."""
    return [row for _, row in self.numbered_rows()]

  def numbered_rows(self) -> list[tuple[int, dict]]:
    """(line number, row) of every readable row. A line that is not a JSON
    object with a `run_key` (cut off by a kill, or not written by this
    library) is skipped with a warning naming `<path>:<line>`; its run, if
    it was one, is rerun."""
    if not os.path.exists(self.path):
      return []
    rows = []
    with open(self.path, errors='replace') as f:
      for number, line in enumerate(f, 1):
        line = line.strip()
        if not line:
          continue
        try:
          row = json.loads(line)
        except json.JSONDecodeError:
          warnings.warn(f'{self.path}:{number}: ignoring an unreadable line '
                        '(a run cut off while writing?); its run is rerun.')
          continue
        if not isinstance(row, dict) or not isinstance(row.get('run_key'),
                                                       str):
          warnings.warn(f'{self.path}:{number}: ignoring a line that is not '
                        'a results row (no run_key); it is not a row this '
                        'library wrote.')
          continue
        rows.append((number, row))
    return rows

  def done_keys(self) -> set[str]:
    return {row['run_key'] for row in self.rows()}

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
    for row in ResultsFile(path).rows():
      key = row['run_key']
      if key in seen:
        continue
      seen.add(key)
      if include_diverged or not row.get('diverged'):
        rows.append(row)
  return rows


def done_keys(workdir: str) -> set[str]:
  """Run keys finished in any shard of `workdir`."""
  return {row['run_key'] for row in read_rows(workdir)}
