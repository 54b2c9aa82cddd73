"""What every benchmark shares: timing steps (CUDA events on a GPU, the wall clock on the CPU).
The machine a result was measured on is described by `mosaic_pretrain.device_info`."""

import time
from collections.abc import Callable

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
