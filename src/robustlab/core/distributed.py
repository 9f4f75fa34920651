"""Data-parallel training across processes (``torchrun --nproc_per_node N -m robustlab train ...``).

Every rank draws the same global batch of ``data.batch_size`` images (same seeded generator, same
augmentation) and keeps its slice ``batch[rank::world]``; each rank crafts the attack on its own slice;
DistributedDataParallel averages the gradients, so with equal slices an update equals the single-process
update on the global batch (up to float reduction order, BatchNorm statistics of the slice, and attack
randomness drawn per rank). Metrics are summed across ranks; evaluation sets are split across ranks and
their counts summed; only rank 0 writes files. Backend: NCCL on CUDA, gloo on CPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "DistContext":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def init(self, device: torch.device) -> None:
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def device(self, device: torch.device) -> torch.device:
        if self.enabled and device.type == "cuda":
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    def shard(self, n: int, device=None) -> torch.Tensor:
        """This rank's positions among n items: rank, rank + world, ..."""
        return torch.arange(self.rank, n, self.world, device=device)

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            t = t.clone()
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def average_gradients(self, params) -> None:
        """Average the gradients of ``params`` across ranks in place (one all-reduce of their concatenation); for
        modules outside DDP's wrapper (a method's own modules)."""
        grads = [p.grad for p in params if p.grad is not None]
        if not (self.enabled and grads):
            return
        flat = self.sum(torch.cat([g.reshape(-1) for g in grads])) / self.world
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))

    def any(self, flag: torch.Tensor) -> bool:
        return bool(self.sum(flag.to(torch.int32)) > 0)

    def gather(self, obj) -> list:
        if not self.enabled:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """Every rank's rows of ``t`` concatenated in rank order (ranks may hold different numbers of rows)."""
        if not self.enabled:
            return t
        n = torch.tensor([len(t)], device=t.device)
        sizes = [torch.zeros_like(n) for _ in range(self.world)]
        dist.all_gather(sizes, n)
        sizes = [int(v) for v in sizes]
        padded = torch.zeros((max(sizes), *t.shape[1:]), dtype=t.dtype, device=t.device)
        padded[:len(t)] = t
        parts = [torch.zeros_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        return torch.cat([p[:k] for p, k in zip(parts, sizes)])

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
