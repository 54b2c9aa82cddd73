"""The machine a result was measured on (device, versions, driver, date): for benchmark
results, ablation reports and a run's summary. Torch only, so every layer may use it."""

import datetime
import platform
import subprocess
from pathlib import Path

import torch


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
