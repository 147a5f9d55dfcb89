"""Device memory of a MANO run on a float device: what training holds, measured from the model itself.

float32 throughout (4 bytes a value), with P the model's parameters and B the batch:

  weights             P
  optimizer           Adam's two moments, 2 P
  gradients           P (both rules accumulate every stage's gradient before the one optimiser step)
  input               B x the sample (a flat image, or a coefficient field)
  stored_activations  BP: every tensor autograd saves for the backward pass of the whole model;
                      FTP, block_loss "target": the clean pass's stage outputs h_0..h_L and the targets
                      tau_1..tau_L it keeps, plus the largest one stage's local graph (each is backpropagated
                      and freed before the next); block_loss "readout": the one map handed from block to block
                      and the largest block's graph with its readout's (engine.mano_loop: one pass)
  output_error        e: (B, classes), or (B, H, W) for a field

What autograd saves is measured, not estimated: ``torch.autograd.graph.saved_tensors_hooks`` sees every tensor
the forward keeps for backward (parameters excluded, a storage counted once), at batches 1 and 2; the saved
bytes are affine in the batch, so B's are extrapolated exactly.
"""
from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch

from ..accounting.memory import MemoryArena
from ..device.spec import DeviceProfile

__all__ = ["plan_mano_memory", "plan_mano_device_memory", "saved_bytes"]


def saved_bytes(run: Callable[[], torch.Tensor], parameters) -> int:
    """Bytes autograd keeps for the backward pass of ``run()`` (parameters excluded, each storage once)."""
    params = {p.untyped_storage().data_ptr() for p in parameters}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(seen.values())


def _affine(measure: Callable[[int], int], batch: int) -> int:
    """measure(b) at b = 1 and 2, extended to ``batch`` (the saved bytes are affine in the batch)."""
    one, two = measure(1), measure(2)
    return max(0, one + (two - one) * (batch - 1))


def plan_mano_memory(model: torch.nn.Module, sample_shape: tuple[int, ...], profile: DeviceProfile, rule: str,
                     batch: int, outputs: int, field: bool, readouts: bool = False) -> MemoryArena:
    """Allocate what training ``model`` with ``rule`` (bp or ftp) in batches of ``batch`` holds on ``profile``
    (module docstring); ``sample_shape``: one input's shape; ``outputs``: classes (``field``: the output is a
    field of the input's grid); ``readouts``: FTP trains block readouts (block_loss "readout") instead of
    forwarding targets. Raises DeviceMemoryError naming what did not fit."""
    arena = MemoryArena(profile.capacity.sram_bytes, profile.capacity.flash_bytes)
    params = list(model.parameters())
    n_params = sum(p.numel() for p in params)

    def alloc(name: str, values: int, category: str) -> None:
        arena.alloc(name, (1,), np.int8, category, 4 * int(values))

    alloc("weights", n_params, "weights")
    alloc("optimizer", 2 * n_params, "optimizer")
    alloc("gradients", n_params, "gradients")
    alloc("input", batch * int(np.prod(sample_shape)), "input")
    was_training = model.training
    model.train()
    try:
        if rule == "bp":
            stored = _affine(lambda b: saved_bytes(lambda: model(torch.zeros((b, *sample_shape))), params), batch)
            alloc("stored_activations", stored // 4, "stored_activations")
        else:
            with torch.no_grad():
                h = model.stem(torch.zeros((1, *sample_shape)))
            map_values = batch * h.numel()
            # target: h_0..h_L and tau_1..tau_L; readout: the map handed from block to block
            kept = 1 if readouts else (len(model.blocks) + 1) + len(model.blocks)

            def local(l: int, h_in: torch.Tensor) -> torch.Tensor:
                out = model.blocks[l](h_in)
                return model.readouts[l](out) if readouts else out

            def largest_stage(b: int) -> int:
                x = torch.zeros((b, *sample_shape))
                with torch.no_grad():
                    hb = model.stem(x)
                sizes = [saved_bytes(lambda: local(0, model.stem(x)), params)]
                sizes += [saved_bytes(lambda l=l: local(l, hb), params) for l in range(1, len(model.blocks))]
                sizes.append(saved_bytes(lambda: model.head(hb), params))
                return max(sizes)

            alloc("stage_output" if readouts else "stage_outputs_and_targets", kept * map_values,
                  "stored_activations")
            alloc("local_graph", _affine(largest_stage, batch) // 4, "activations")
    finally:
        model.train(was_training)
    alloc("output_error", batch * (int(np.prod(sample_shape)) if field else outputs), "errors")
    return arena


def plan_mano_device_memory(model: torch.nn.Module, sample_shape: tuple[int, ...], profile: DeviceProfile, rule: str,
                            batch: int, readouts: bool = False) -> MemoryArena:
    """What training ``model`` holds when its linear maps train on ``profile``'s kernels
    (rules.mano_device_training; ``rule`` bp, or ftp with ``readouts``):

      weights             the maps' values in the weight format, a 4-byte exponent per row on a per-channel
                          profile; the host's parameters (LayerNorms, position table) float32
      gradients           the host parameters', float32 (SGD: no optimiser state)
      input               B x the sample, in the activation format
      stored_activations  what the backward keeps, measured as plan_mano_memory does with the maps on the device:
                          each map keeps its input's mantissas (the activation format's bytes), the host's
                          operations their float32 tensors; BP: the whole model's; FTP: the map handed from
                          block to block (float32) and the largest block's graph with its readout's
      pending_errors      the errors whose updates wait for the step, in the error format: BP every map's output
                          error; FTP one block's (its maps update when its graph is done)

    Measured on a copy of ``model`` (``model`` is left as it was). Raises DeviceMemoryError naming what did not
    fit."""
    from .mano_device_training import DeviceTraining

    arena = MemoryArena(profile.capacity.sram_bytes, profile.capacity.flash_bytes)
    probe = copy.deepcopy(model)
    trainer = DeviceTraining(probe, profile, lr=0.0)
    host = trainer.host_parameters()
    n_host = sum(p.numel() for p in host)
    arena.alloc("weights", (1,), np.int8, "weights",
                sum(m.weight.numel() for m in trainer.linears) * profile.weight.bytes_per_value)
    if profile.weight_scale.per_channel and not profile.is_float:
        arena.alloc("weight scales", (1,), np.int8, "weights", 4 * sum(m.weight.shape[0] for m in trainer.linears))
    arena.alloc("host_parameters", (1,), np.int8, "weights", 4 * n_host)
    arena.alloc("gradients", (1,), np.int8, "gradients", 4 * n_host)
    arena.alloc("input", (1,), np.int8, "input",
                batch * int(np.prod(sample_shape)) * profile.activation.bytes_per_value)

    def outputs_of(run: Callable[[], torch.Tensor]) -> tuple[int, int]:
        """(saved bytes, error values queued) of run()'s graph."""
        trainer.graph_outputs = 0
        saved = saved_bytes(run, host)
        return saved, trainer.graph_outputs

    probe.train()
    with trainer:
        if rule == "bp":
            one, two = (outputs_of(lambda b=b: probe(torch.zeros((b, *sample_shape)))) for b in (1, 2))
            stored = max(0, one[0] + (two[0] - one[0]) * (batch - 1))
            errors = max(0, one[1] + (two[1] - one[1]) * (batch - 1))
            arena.alloc("stored_activations", (1,), np.int8, "stored_activations", stored)
        else:
            def local(b: int) -> tuple[list, int]:
                """Per stage (stem with block 1, each block, the head), (saved bytes, error values) at batch b,
                and the values of the map handed from block to block."""
                x = torch.zeros((b, *sample_shape))
                with torch.no_grad():
                    h = probe.stem(x)
                stages = [outputs_of(lambda: probe.readouts[0](probe.blocks[0](probe.stem(x))))]
                stages += [outputs_of(lambda l=l: probe.readouts[l](probe.blocks[l](h)))
                           for l in range(1, len(probe.blocks))]
                stages.append(outputs_of(lambda: probe.head(h)))
                return stages, h.numel()

            (one, map_one), (two, _) = local(1), local(2)
            per_stage = [(a[0] + (b[0] - a[0]) * (batch - 1), a[1] + (b[1] - a[1]) * (batch - 1))
                         for a, b in zip(one, two)]
            stored, errors = max(v[0] for v in per_stage), max(v[1] for v in per_stage)
            arena.alloc("stage_output", (1,), np.int8, "stored_activations", 4 * batch * map_one)
            arena.alloc("local_graph", (1,), np.int8, "activations", max(0, stored))
        trainer.pending.clear()
    arena.alloc("pending_errors", (1,), np.int8, "errors", max(0, errors) * profile.error.bytes_per_value)
    return arena
