"""What every benchmark shares: timing steps (CUDA events on a GPU, the wall clock on the CPU)
and describing the machine a result was measured on."""

import datetime
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch


def time_steps(step: Callable[[int], None], steps: int, warmup: int, device: torch.device):
    """Milliseconds of each of `steps` calls `step(i)` after `warmup` calls."""
    for number in range(warmup):
        step(number)
    times = []
    for number in range(warmup, warmup + steps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step(number)
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            started = time.perf_counter()
            step(number)
            times.append((time.perf_counter() - started) * 1000)
    return times


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_description(device: torch.device) -> dict:
    """Device name, torch/CUDA/triton versions, GPU driver and date, for a result's header."""
    described = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "date": datetime.date.today().isoformat(),
    }
    try:
        import triton

        described["triton"] = triton.__version__
    except ImportError:
        described["triton"] = None
    described["driver"] = _driver_version() if device.type == "cuda" else None
    return described


def _driver_version() -> str | None:
    try:
        output = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return output.stdout.strip().splitlines()[0] if output.returncode == 0 else None
    except (OSError, IndexError, subprocess.SubprocessError):
        return None
