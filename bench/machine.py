"""The machine a benchmark ran on: CPU model, instruction sets that matter for PyTorch's CPU
kernels (AVX2, AVX-512, AVX-512 BF16, AMX), the kernel dispatch level torch chose, threads,
load, and the GPU if one is used. Every benchmark prints and stores this with its figures."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

_FLAGS = {
    "avx2": "avx2",
    "avx512f": "avx512",
    "avx512_bf16": "avx512_bf16",
    "amx_bf16": "amx_bf16",
    "amx_tile": "amx_tile",
}


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return model, flags


def machine_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    """JSON-ready description of the machine (and of the GPU when ``device`` is CUDA)."""
    model, flags = _cpuinfo()
    isa = [name for flag, name in _FLAGS.items() if flag in flags]
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # older torch
        capability = "unknown"
    out: dict[str, Any] = {
        "cpu_model": model,
        "instruction_sets": isa,
        "torch_cpu_capability": capability,
        "bf16_native": "avx512_bf16" in flags or "amx_bf16" in flags,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "torch": torch.__version__,
    }
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(dev)
    return out


def machine_line(info: dict[str, Any]) -> str:
    """One printable line: ``CPU ... | ISA avx2,avx512,... | torch kernels AVX512 | ...``."""
    parts = [
        f"CPU {info['cpu_model']}",
        f"ISA {','.join(info['instruction_sets']) or 'none of avx2/avx512/amx'}",
        f"torch kernels {info['torch_cpu_capability']}",
        f"threads {info['torch_threads']}/{info['cpu_count']} cores",
        f"load {info['load_average'][0]}",
    ]
    if "gpu" in info:
        parts.insert(0, f"GPU {info['gpu']}")
    return " | ".join(parts)


if __name__ == "__main__":
    print(machine_line(machine_info()))
