"""Device and process-group set-up: one process per device, launched by torchrun for several.

``torchrun --nproc_per_node N -m prefstream.train dpo ...`` sets RANK / WORLD_SIZE /
LOCAL_RANK; without them this is a single process. NCCL on GPUs, gloo on CPU.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from prefstream.errors import PrefstreamError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self):
        """bf16 autocast on CUDA (weights and optimizer stay fp32); plain fp32 on CPU."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def print(self, *args) -> None:
        if self.is_main:
            print(*args, flush=True)

    def notice(self, message: str) -> None:
        if self.is_main:
            print(message, file=sys.stderr, flush=True)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """Mean of a scalar tensor across processes (itself when there is one)."""
        if not self.distributed:
            return value
        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value / self.world_size

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """Concatenate 1-D tensors of any length from all processes (for metrics)."""
        if not self.distributed:
            return values
        parts = [None] * self.world_size
        dist.all_gather_object(parts, values.detach().cpu())
        return torch.cat(parts)


def setup_runtime(device: str | None, seed: int) -> Runtime:
    """Pick the device, join the process group under torchrun, seed everything."""
    if device == "cuda" and not torch.cuda.is_available():
        raise PrefstreamError(f"--device cuda, but this torch ({torch.__version__}) sees no CUDA GPU; use --device cpu")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    torch_device = torch.device(device)
    if world_size > 1:
        if device == "cuda":
            local_rank = int(os.environ["LOCAL_RANK"])
            torch.cuda.set_device(local_rank)
            torch_device = torch.device("cuda", local_rank)
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    # Every process seeds alike: data order is a function of the step, and the model comes
    # from disk, so the seed only matters for anything random inside the model (dropout).
    torch.manual_seed(seed)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # bf16 autocast anyway; tf32 for the fp32 rest
    return Runtime(torch_device, rank, world_size)


def teardown(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()
