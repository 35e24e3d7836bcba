"""Label consistency with the neighbourhood, aware of S_f (Goel et al. 2024 §2).

For label-only manipulations (interclass confusion: class a labelled b;
label flips) the input is clean, so gradients and features need not look
like S_f's; what is wrong is the label against the sample's neighbours.

Neighbours: the k nearest training samples by cosine of M_o's centred
penultimate features (`_features`), S_f excluded (its labels are known to be
wrong) and the sample itself excluded. q_i(c) is the share of i's neighbours
labelled c. S_f tells which swaps happened: for each f ∈ S_f with
neighbourhood majority m_f ≠ y_f, the pair (given label y_f, class m_f) is
a *seen swap*. Then

  score_i = max_{c : (y_i, c) is a seen swap} q_i(c)   (0 if there is none),

the share of i's neighbours that vote for a class S_f shows being relabelled
y_i. It is high only when the label disagrees with the neighbourhood in the
way S_f does; a sample whose label disagrees in a way S_f never shows (an
ambiguous clean digit) scores 0, as does every sample when S_f's labels agree
with its neighbourhoods (BadNet: triggered samples sit with the target
class), where the gradient and feature scores do the work instead.
Departure: the paper only raises the question; the neighbourhood vote is a
k-NN label-noise filter (e.g. Wilson's edited nearest neighbours) restricted
to the swaps S_f exhibits.
"""

from __future__ import annotations

import numpy as np

from unlearnjax.expansion import _common, _features

NUM_NEIGHBOURS = 10
QUERY_CHUNK = 1024


def _reference(task):
  """(unit centred features, labels, training rows) of S_tr \\ S_f."""
  rows = task.retain if task.retain.size else np.arange(0)
  features = _common.unit_rows(_features.centred(task, task.train))
  return features[rows], task.train.labels[rows], rows


def neighbour_votes(task, split, train_rows=None,
                    num_neighbours: int = NUM_NEIGHBOURS) -> np.ndarray:
  """(N, classes) share of each sample's k nearest S_tr \\ S_f neighbours
  (itself excluded) carrying each label."""
  train_rows = _common.check_train_rows(split, train_rows)

  def compute():
    reference, labels, rows = _reference(task)
    k = min(num_neighbours, max(rows.size - 1, 1))
    queries = _common.unit_rows(_features.centred(task, split))
    column = np.full(len(task.train), -1, np.int64)
    column[rows] = np.arange(rows.size)
    own = np.where(train_rows >= 0, column[np.maximum(train_rows, 0)], -1)
    votes = np.zeros((len(split), task.train.num_classes))
    for start in range(0, len(split), QUERY_CHUNK):
      stop = min(start + QUERY_CHUNK, len(split))
      cosines = queries[start:stop] @ reference.T
      mine = own[start:stop]
      inside = np.flatnonzero(mine >= 0)
      cosines[inside, mine[inside]] = -np.inf
      nearest = np.argpartition(-cosines, k - 1, axis=1)[:, :k]
      for c in range(task.train.num_classes):
        votes[start:stop, c] = np.mean(labels[nearest] == c, axis=1)
    return votes

  return task.cached(
      f'expansion/label_votes/{_common.split_digest(split)}/{num_neighbours}/'
      f'{_common.rows_digest(train_rows)}',
      task.forget, compute)


def seen_swaps(task, num_neighbours: int = NUM_NEIGHBOURS) -> np.ndarray:
  """(classes, classes) bool: [y, c] when some f ∈ S_f labelled y has a
  neighbourhood whose majority is c ≠ y."""
  votes = neighbour_votes(task, task.forget_split, task.forget,
                          num_neighbours)
  majority = votes.argmax(axis=1)
  given = task.forget_split.labels
  swaps = np.zeros((task.train.num_classes,) * 2, bool)
  differ = majority != given
  swaps[given[differ], majority[differ]] = True
  return swaps


def score(task, split, train_rows=None) -> np.ndarray:
  """(N,) share of neighbours voting for a class S_f shows relabelled as the
  sample's own label (module docstring)."""
  train_rows = _common.check_train_rows(split, train_rows)
  votes = neighbour_votes(task, split, train_rows)
  allowed = seen_swaps(task)[split.labels]          # (N, classes)
  return np.max(np.where(allowed, votes, 0.0), axis=1)
