"""Rows per compiled call: what measures fastest for the model and device.

XLA:CPU runs a convolution's backward pass several times slower per sample on
a large batch than on a small one (Potion's ResNet-9 at 32x32x3, 2 cores,
eval-mode gradient of the XLF scalar: 11.0 ms/sample at 4 rows, 22.7 at 128,
43.7 at 512; PyTorch 12.8 and 17.7 at 128 and 512), and a vmapped per-sample
gradient more so (35.6 ms/sample at 8 rows, 107 at 256). The activations of a
few rows fit the caches; those of 512 do not. `docs/performance.md` has the
tables and the commands.

So, on a CPU, work that is a sum over rows (a batch gradient with the model
in evaluation mode, a chunk of per-sample gradients) runs as a host loop of
small calls whose results are added on the device: the same sum, summed in
another order (the last float32 digits can differ from one big call). How
small is set from the FLOPs of one sample's forward pass (XLA's cost
analysis of the lowered function, so the choice is deterministic: a rule,
never a timing). On GPUs and TPUs one call takes the whole batch (a chunk of
`ACCELERATOR_CHUNK` per-sample gradients), as before.

PTN's search (`search_candidates`) follows the same rule for how many
dampened copies of the model one vmapped call scores: the same pick either
way, only the speed differs.

Training steps are not split: BatchNorm's batch statistics would change.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# FLOPs of forward passes per call that measured fastest on XLA:CPU (2
# cores): batch gradients, and vmapped per-sample gradients (which hold a
# gradient per row). small_cnn on 8x8 digits (2.9 MFLOP/sample) is fastest at
# 64 and 32 rows, ResNet-9 at 32x32 (530 MFLOP) at 4 and 8 rows.
CPU_BATCH_GRAD_FLOPS = 2.5e8
CPU_PER_SAMPLE_FLOPS = 1e8
CPU_MIN_BATCH_ROWS = 4
CPU_MIN_PER_SAMPLE_ROWS = 8
MAX_ROWS = 1024
# PTN's search: candidates dampened and scored per vmapped call on a CPU.
CPU_SEARCH_FLOPS = 5e7
MAX_SEARCH_CANDIDATES = 16
ACCELERATOR_CHUNK = 256


def on_cpu() -> bool:
  return jax.default_backend() == 'cpu'


@functools.lru_cache(maxsize=128)
def _forward_flops(model: nn.Module, treedef, shapes: tuple,
                   image_shape: tuple) -> float:
  variables = jax.tree.unflatten(
      treedef, [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes])
  lowered = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(
      variables, jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
  analysis = lowered.cost_analysis() or {}
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return max(float(analysis.get('flops', 0.0)), 1.0)


def forward_flops(model: nn.Module, variables, image_shape) -> float:
  """XLA's FLOP count of one sample's evaluation-mode forward pass."""
  leaves, treedef = jax.tree.flatten(variables)
  return _forward_flops(model, treedef, tuple(tuple(np.shape(l))
                                              for l in leaves),
                        tuple(int(d) for d in image_shape))


def _power_of_two_at_most(x: float) -> int:
  return 1 << max(0, int(x).bit_length() - 1) if x >= 1 else 1


def batch_gradient_rows(model: nn.Module, variables, image_shape,
                        batch_size: int) -> int:
  """Rows per device per call of an evaluation-mode batch gradient."""
  if not on_cpu():
    return batch_size
  rows = _power_of_two_at_most(CPU_BATCH_GRAD_FLOPS /
                               forward_flops(model, variables, image_shape))
  return int(min(max(rows, CPU_MIN_BATCH_ROWS), MAX_ROWS, batch_size))


def per_sample_rows(model: nn.Module, variables, image_shape) -> int:
  """Rows per call of vmapped per-sample gradients (a chunk)."""
  if not on_cpu():
    return ACCELERATOR_CHUNK
  rows = _power_of_two_at_most(CPU_PER_SAMPLE_FLOPS /
                               forward_flops(model, variables, image_shape))
  return int(min(max(rows, CPU_MIN_PER_SAMPLE_ROWS), ACCELERATOR_CHUNK))


def search_candidates(model: nn.Module, variables, image_shape) -> int:
  """PTN candidates per vmapped call (each a dampened copy of the model)."""
  if not on_cpu():
    return MAX_SEARCH_CANDIDATES
  rows = _power_of_two_at_most(CPU_SEARCH_FLOPS /
                               forward_flops(model, variables, image_shape))
  return int(min(max(rows, 1), MAX_SEARCH_CANDIDATES))


# Runs advanced together per compiled call (`training.many_step`), on a CPU:
# one small-CNN step at batch 128 keeps ~1.5 of 2 cores busy, and 4
# independent steps in one XLA program fill them (1.40x the throughput of 4
# calls; 2: 1.26x, 8: 1.18x; a vmapped step is 3-5x *slower* there, its
# batched-kernel convolutions run as grouped ones). `bench/many_runs.py`.
CPU_RUNS_PER_CALL = 4


def runs_per_call(count: int) -> int:
  """How many independent runs of one shape share a compiled call: 4 on a
  CPU (unrolled copies), all of them on an accelerator (vmapped)."""
  return max(1, min(count, CPU_RUNS_PER_CALL if on_cpu() else count))
