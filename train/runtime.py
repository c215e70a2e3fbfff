"""Device, precision and process-group set-up: one process per device, launched by torchrun for several.

``torchrun --nproc_per_node N -m prefstream.train dpo ...`` sets RANK / WORLD_SIZE /
LOCAL_RANK; without them this is a single process. NCCL on GPUs, gloo on CPU. With
``--fsdp`` the processes share one explicit 1-D device mesh that FSDP2 shards over.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from prefstream.errors import PrefstreamError

TORCHRUN = "torchrun --nproc_per_node N -m prefstream.train KIND ..."


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    dtype: torch.dtype = torch.float32  # of the weights
    rank: int = 0
    world_size: int = 1
    mesh: object = None  # torch DeviceMesh under --fsdp

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    @property
    def fsdp(self) -> bool:
        return self.mesh is not None

    def autocast(self):
        """bf16 autocast on CUDA; plain fp32 (or the weights' own dtype) on CPU."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def inference(self):
        """inference_mode for passes without gradients; no_grad under FSDP, whose unsharded
        parameter buffers are reused by training and must not become inference tensors."""
        return torch.no_grad() if self.fsdp else torch.inference_mode()

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

    def all_true(self, flag: bool) -> bool:
        """True when ``flag`` holds on every process."""
        if not self.distributed:
            return flag
        value = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item())

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """Concatenate 1-D tensors of any length from all processes (for metrics)."""
        return torch.cat(self.gather_objects(values.detach().cpu()))

    def gather_objects(self, obj) -> list:
        """``[obj of rank 0, obj of rank 1, ...]`` on every process."""
        if not self.distributed:
            return [obj]
        parts = [None] * self.world_size
        dist.all_gather_object(parts, obj)
        return parts


def cpu_supports_bf16() -> bool:
    """Whether this CPU runs bf16 kernels (oneDNN needs AVX512-BF16, AMX or similar)."""
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


def check_runtime(device: str | None, fsdp: bool, dtype: str | None) -> tuple[str, torch.dtype]:
    """The device and weight dtype to use; one-line errors for combinations that cannot run."""
    if device == "cuda" and not torch.cuda.is_available():
        raise PrefstreamError(f"--device cuda, but this torch ({torch.__version__}) sees no CUDA GPU; use --device cpu")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if fsdp and "RANK" not in os.environ:
        raise PrefstreamError(f"--fsdp shards the model across processes started by torchrun; run `{TORCHRUN}`")
    dtype = dtype or ("bf16" if device == "cuda" else "fp32")
    if dtype == "bf16" and device == "cpu" and not cpu_supports_bf16():
        raise PrefstreamError("--dtype bf16, but this CPU has no bf16 support in torch; use --dtype fp32")
    if dtype == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        raise PrefstreamError("--dtype bf16, but this GPU does not support bf16; use --dtype fp32")
    return device, torch.bfloat16 if dtype == "bf16" else torch.float32


def setup_runtime(device: str, dtype: torch.dtype, fsdp: bool, seed: int) -> Runtime:
    """Join the process group under torchrun (and build the FSDP mesh), seed everything."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    torch_device = torch.device(device)
    mesh = None
    if world_size > 1 or fsdp:
        if device == "cuda":
            torch_device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(torch_device)
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
        if fsdp:
            from torch.distributed.device_mesh import init_device_mesh

            mesh = init_device_mesh(device, (world_size,), mesh_dim_names=("shard",))
    # Every process seeds alike: data order is a function of the step, and the model comes
    # from disk, so the seed only matters for anything random inside the model (dropout).
    torch.manual_seed(seed)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # bf16 autocast anyway; tf32 for the fp32 rest
    return Runtime(torch_device, dtype, rank, world_size, mesh)


def teardown(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.destroy_process_group()
