"""What every study's report is made of.

- Numbers: `mean_std` / `fmt` / `cell` (mean ± std over the finite values,
  None and NaN skipped), `count`, `finite`, `curve` (points and error bars).
- Seeds: `seeds(rows)` and `seed_count(rows)` ("n = 2 seeds"), which
  `table(..., n=...)` puts into the first header cell, so every table of
  means says over how many seeds they are.
- Tables: `table(header, lines, n=None)`, a Markdown table; `ordered`,
  `first_seen` (the order of its lines), `tally` (row counts for captions);
  `found_fraction_columns` / `by_found_fraction` (the found-fraction axis of
  Goel's Fig. 2 and Potion's Fig. 10).
- Labels: `Labels(own)` names methods in figures and tables: a report's own
  names first (rows that are no method, like 'none', and methods a paper
  names differently), else the registry's `Method.label`, else the name.
- Figures: `subplots` (matplotlib on the Agg backend) and `save_figure`,
  which writes the PNG and, given the table of the plotted numbers, its
  Markdown twin `<stem>.md`.
- `Report`: the sections of `report.md` in order and every file written
  beside it; `Report.curves` adds `curves.png`, the per-step curves of the
  study's one curve run (`read_curves`, `curves_figure`; written by
  `unlearnjax.curves`).
- `rebuild_main` / `cli`: `python -m unlearnjax.reports.<study>
  --workdir=DIR`, from every finished row of the workdir (`results.jsonl`
  and the workers' shards, diverged rows left out, as the experiment
  scripts do).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import numbers
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

DPI = 120

# ----------------------------------------------------------------- numbers


def finite(values: Iterable[Any]) -> list[float]:
  """The real numbers among `values`, as floats (None, NaN and anything
  that is not a number dropped)."""
  return [float(v) for v in values
          if isinstance(v, numbers.Real) and not math.isnan(v)]


def count(values: Iterable[Any]) -> int:
  """How many of `values` enter a mean (the finite ones)."""
  return len(finite(values))


def mean_std(values: Iterable[Any]) -> tuple[float, float]:
  """Mean and population std of the finite values; (nan, nan) if none."""
  values = finite(values)
  if not values:
    return math.nan, math.nan
  return float(np.mean(values)), float(np.std(values))


def fmt(mean: float, std: float | None = None, scale: float = 1.0,
        digits: int = 1) -> str:
  """'12.3 ± 0.4' (values times `scale`), '12.3' without a std, '–' for
  NaN."""
  if math.isnan(mean):
    return '–'
  if std is None or math.isnan(std):
    return f'{mean * scale:.{digits}f}'
  return f'{mean * scale:.{digits}f} ± {std * scale:.{digits}f}'


def cell(values: Iterable[Any], scale: float = 1.0, digits: int = 1) -> str:
  """A table cell: mean ± std of `values` (see `fmt`)."""
  return fmt(*mean_std(values), scale, digits)


# ------------------------------------------------------------------- seeds


def seeds(rows: Iterable[dict]) -> list:
  """The seeds of `rows`, sorted."""
  return sorted({r['seed'] for r in rows if r.get('seed') is not None})


def seed_count(rows: Sequence[dict],
               by: Callable[[dict], Any] | None = None) -> str:
  """'n = 2 seeds': how many seeds `rows` hold. With `by` (a row -> which
  line of a table it feeds) the seeds are counted per line, and a range is
  shown where lines differ ('n = 1–3 seeds', e.g. a method still running)."""
  if by is None:
    counts = [len(seeds(rows))]
  else:
    groups = collections.defaultdict(list)
    for r in rows:
      groups[by(r)].append(r)
    counts = [len(seeds(g)) for g in groups.values()] or [0]
  low, high = min(counts), max(counts)
  text = str(low) if low == high else f'{low}–{high}'
  return f'n = {text} seed{"" if high == 1 else "s"}'


# ------------------------------------------------------------------ tables


def table(header: Sequence[str], lines: Iterable[Sequence[str]],
          n: str | None = None) -> str:
  """A Markdown table (no trailing newline). `n`, e.g. `seed_count(rows)`,
  is added to the first header cell: '| method (n = 2 seeds) | ... |'."""
  header = list(header)
  if n:
    header[0] = f'{header[0]} ({n})'
  out = ['| ' + ' | '.join(header) + ' |', '|---' * len(header) + '|']
  out += ['| ' + ' | '.join(str(c) for c in line) + ' |' for line in lines]
  return '\n'.join(out)


def tally(rows: Iterable[dict], key: Callable[[dict], Any]) -> str:
  """'12 badnet, 3 ic': how many rows have each value of `key(row)`."""
  counts = collections.Counter(key(r) for r in rows)
  return ', '.join(f'{n} {k}' for k, n in sorted(counts.items(),
                                                  key=lambda kv: str(kv[0])))


def ordered(keys: Iterable[Any], order: Sequence[Any] = ()) -> list:
  """The distinct `keys`: those in `order` first, in that order, then the
  others sorted."""
  keys = set(keys)
  return [k for k in order if k in keys] + sorted(keys - set(order), key=str)


def first_seen(rows: Iterable[dict], field: str = 'method',
               exclude: Iterable[Any] = ()) -> list:
  """The distinct values of `field` in the order the rows first show them,
  without those in `exclude` (e.g. the reference models)."""
  exclude, seen = set(exclude), []
  for r in rows:
    value = r.get(field)
    if value not in exclude and value not in seen:
      seen.append(value)
  return seen


def found_fraction_columns(rows: Iterable[dict]) -> list:
  """The x axis of a table against the found fraction |S_f|/|S_m| (Goel
  Fig. 2, Potion Fig. 10): 'one-shot' if any row is one-shot, then the
  sorted found fractions of the other rows."""
  rows = list(rows)
  fractions = sorted({float(r['found_fraction']) for r in rows
                      if r.get('found_fraction') is not None
                      and not r.get('one_shot')})
  return (['one-shot'] if any(r.get('one_shot') for r in rows) else []
          ) + fractions


def by_found_fraction(rows: Iterable[dict], method: str,
                      value: Callable[[dict], Any]) -> dict:
  """Found fraction (float, or 'one-shot') -> `value(row)` of every row of
  `method` (one per seed, setting ...)."""
  series = collections.defaultdict(list)
  for r in rows:
    if r.get('method') != method:
      continue
    if r.get('one_shot'):
      series['one-shot'].append(value(r))
    elif r.get('found_fraction') is not None:
      series[float(r['found_fraction'])].append(value(r))
  return series


# ------------------------------------------------------------------ labels


def method_label(name: Any) -> str:
  """The registry's label of method `name` (`Method.label`), else the name."""
  from unlearnjax.unlearn.registry import METHODS  # pylint: disable=g-import-not-at-top
  method = METHODS.get(name)
  return method.display_name if method is not None else str(name)


class Labels:
  """How a report names methods: `own` first (names of rows that are no
  method, like 'none' or 'oracle', and the paper's name for a method where
  it differs from the registry's), else `method_label`."""

  def __init__(self, own: Mapping[str, str] | None = None):
    self.own = dict(own or {})

  def __call__(self, name: Any) -> str:
    return self.own[name] if name in self.own else method_label(name)


# ----------------------------------------------------------------- figures


def subplots(nrows: int = 1, ncols: int = 1, **kwargs):
  """`matplotlib.pyplot.subplots` (Agg backend: files only, no display)."""
  return plt.subplots(nrows, ncols, **kwargs)


def curve(value_lists: Iterable[Iterable[Any]], scale: float = 1.0
          ) -> tuple[np.ndarray, np.ndarray]:
  """The points and error bars of a curve: mean and std (times `scale`) of
  each list of values; NaN means where a list has no finite value, and a
  NaN std (no value) drawn as 0."""
  stats = [mean_std(values) for values in value_lists]
  mean = np.array([scale * m for m, _ in stats])
  std = np.array([scale * (s if not math.isnan(s) else 0.0) for _, s in stats])
  return mean, std


def twin_path(path: str) -> str:
  """The Markdown twin of a figure: `<stem>.md` beside `<stem>.png`."""
  return os.path.splitext(path)[0] + '.md'


def write_markdown(path: str, text: str) -> str:
  """Writes `text` ending in exactly one newline; returns `path`."""
  with open(path, 'w') as f:
    f.write(text.rstrip('\n') + '\n')
  return path


def save_figure(fig, path: str, table_md: str | None = None) -> list[str]:
  """Saves `fig` as a PNG at `path` (tight layout, `DPI`) and closes it;
  with `table_md`, the Markdown of the plotted numbers, also its twin
  (`twin_path`). Returns the paths written."""
  fig.tight_layout()
  fig.savefig(path, dpi=DPI)
  plt.close(fig)
  written = [path]
  if table_md is not None:
    written.append(write_markdown(twin_path(path), table_md))
  return written


# ------------------------------------------------------------------ curves

CURVE_PANELS = (('train/loss', 'training loss'),
                ('forget/accuracy', 'accuracy on S_f'),
                ('validation/accuracy', 'validation accuracy'))


def read_curves(workdir: str) -> dict[str, dict[str, list[dict]]]:
  """Every complete curve under `<workdir>/curves/`: {run: {method:
  points}} (`<run>/<method>.jsonl`, one JSON point a line; partial curves of
  killed runs are not read)."""
  root = os.path.join(workdir, 'curves')
  found: dict = {}
  for folder, _, files in sorted(os.walk(root)):
    for name in sorted(files):
      if name.endswith('.jsonl'):
        with open(os.path.join(folder, name)) as f:
          points = [json.loads(line) for line in f if line.strip()]
        run = os.path.relpath(folder, root)
        found.setdefault(run, {})[name[:-len('.jsonl')]] = points
  return found


def curves_figure(found: Mapping[str, Mapping[str, list[dict]]]):
  """One row per curve run, one panel per metric (`CURVE_PANELS`), a line
  per method against the step; M_o's training ('original') only where a run
  has no method curve. None when there is nothing to draw."""
  runs = []
  for run, methods in sorted(found.items()):
    shown = {m: p for m, p in methods.items() if m != 'original'} or methods
    runs.append((run, shown))
  panels = [(tag, title) for tag, title in CURVE_PANELS
            if any(tag in p for _, ms in runs for ps in ms.values()
                   for p in ps)]
  if not runs or not panels:
    return None
  fig, axes = subplots(len(runs), len(panels), squeeze=False,
                       figsize=(4.2 * len(panels), 3.2 * len(runs)))
  for r, (run, methods) in enumerate(runs):
    for c, (tag, title) in enumerate(panels):
      ax = axes[r][c]
      for method, points in methods.items():
        xy = [(p['step'], p[tag]) for p in points if p.get(tag) is not None]
        if xy:
          ax.plot(*zip(*xy), marker='.', markersize=3,
                  label=method_label(method))
      ax.set_title(f'{run}: {title}', fontsize=9)
      ax.set_xlabel('step')
      if r == 0 and c == len(panels) - 1:
        ax.legend(fontsize=7)
  return fig


# ------------------------------------------------------------------ report


class Report:
  """A study's `report.md`, built in order, and every file beside it.

  `add` appends lines, `section` a '## heading' and its lines, `image` a
  figure's Markdown; `write` writes a side file (a table), `figure` a PNG
  and its Markdown twin; `save` writes `report.md`. `written` lists every
  path written, in order.
  """

  def __init__(self, workdir: str, title: str, *intro: str):
    os.makedirs(workdir, exist_ok=True)
    self.workdir = workdir
    self.lines = [f'# {title}', '', *intro]
    self.written: list[str] = []

  def path(self, name: str) -> str:
    return os.path.join(self.workdir, name)

  def add(self, *lines: str) -> None:
    self.lines.extend(lines)

  def section(self, heading: str, *lines: str, level: int = 2) -> None:
    self.lines += [f'{"#" * level} {heading}', '', *lines]

  def image(self, name: str, alt: str) -> None:
    self.lines += [f'![{alt}]({name})', '']

  def write(self, name: str, text: str) -> str:
    """Writes Markdown file `name` beside the report; returns its path."""
    path = write_markdown(self.path(name), text)
    self.written.append(path)
    return path

  def figure(self, stem: str, fig, table_md: str | None = None
             ) -> str | None:
    """Saves `fig` (None: nothing drawn) as `<stem>.png`, and `table_md`
    as its twin `<stem>.md` if given, even without a figure. Returns the
    PNG's path, or None."""
    png = None
    if fig is not None:
      paths = save_figure(fig, self.path(stem + '.png'))
      png = paths[0]
      self.written += paths
    if table_md is not None:
      self.write(stem + '.md', table_md)
    return png

  def curves(self, rows: Iterable[dict] = (),
             references: Sequence[str] = ('none', 'oracle')) -> str | None:
    """A 'Curves' section with `curves.png` (`curves_figure`) when the
    workdir has curves, naming the methods of `rows` (`references` left
    out) that have no step curve. Returns the PNG's path, or None."""
    found = read_curves(self.workdir)
    png = self.figure('curves', curves_figure(found))
    if png is None:
      return None
    names = {m for methods in found.values() for m in methods}
    missing = [m for m in first_seen(rows) if m not in references
               and not any(n == m or n.startswith(f'{m}-') for n in names)]
    self.section(
        'Curves',
        f'Per-step curves of one run ({", ".join(sorted(found))}): the '
        'training loss, accuracy on S_f and on the validation split '
        '(`config.curves_every`). The same curves, and M_o\'s training '
        '(`<run>/original`), in TensorBoard: `tensorboard --logdir=WORKDIR`.'
        + (f' No step curve (no step loop, or no curve run): {", ".join(map(str, missing))}.'
           if missing else ''), '')
    self.image('curves.png', 'Curves')
    return png

  def save(self) -> str:
    """Writes `report.md`; returns its path."""
    return self.write('report.md', '\n'.join(self.lines))


# ------------------------------------------------------------------- CLI


def rebuild_main(write_fn: Callable[..., Any], argv=None,
                 description: str | None = None,
                 options: Mapping[str, dict] | None = None) -> None:
  """`python -m unlearnjax.reports.<study> --workdir=DIR`: rebuilds a study's
  figures and tables with `write_fn(rows, workdir, **options) -> path(s)`
  from every finished row of the workdir (`results.read_rows`: the results
  file merged with the workers' shards, diverged rows left out) and prints
  the paths written. `options`: flag name -> `argparse` keyword arguments,
  passed on to `write_fn` by name."""
  from unlearnjax.results import read_rows  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument('--workdir', required=True)
  for name, kwargs in (options or {}).items():
    parser.add_argument(f'--{name}', **kwargs)
  args = vars(parser.parse_args(argv))
  workdir = args.pop('workdir')
  written = write_fn(read_rows(workdir, include_diverged=False), workdir,
                     **args)
  for path in [written] if isinstance(written, str) else written:
    print(path)


def cli(write_fn: Callable[..., Any], usage: str,
        options: Mapping[str, dict] | None = None) -> Callable[..., None]:
  """A report module's `main(argv=None)`: `rebuild_main` of `write_fn`,
  with `usage` as its help text."""

  def main(argv=None) -> None:
    rebuild_main(write_fn, argv, usage, options)

  main.__doc__ = usage
  return main
