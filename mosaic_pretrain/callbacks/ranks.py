"""One verdict for all ranks, so that every process stops or skips at the same batch."""

import torch
from composer.core import State
from composer.utils import dist


def any_rank(state: State, flag: bool) -> bool:
    """True when `flag` is true on any rank (an all-reduce, only with several ranks)."""
    if dist.get_world_size() == 1:
        return flag
    vote = state.device.tensor_to_device(torch.tensor([1.0 if flag else 0.0]))
    dist.all_reduce(vote, reduce_operation="MAX")
    return bool(vote.item())
