"""Attention backends: one signature, chosen by the config string `attention_backend`.

Every backend takes the unpadded query, key and value, each `(total_tokens, heads, head_dim)`,
a `VarlenBatch` describing where each document starts, and the attention dropout probability,
and returns `(total_tokens, heads, head_dim)`. All of them apply the symmetric ALiBi bias and
keep documents apart; they differ only in how fast they do it.

| name         | how                                                       | runs on            |
|--------------|-----------------------------------------------------------|--------------------|
| `eager`      | readable reference: explicit scores, float32 softmax      | any device         |
| `sdpa`       | `torch.nn.functional.scaled_dot_product_attention`, ALiBi | any device         |
|              | and padding as one additive mask per batch                |                    |
| `flex`       | `torch.nn.attention.flex_attention`: ALiBi as a score     | any device;        |
|              | modification, documents as a block mask                   | compiled on CUDA   |
| `flash_attn` | `flash_attn_varlen_func` with `alibi_slopes`              | CUDA, fp16/bf16    |

`auto` resolves, per device, to the fastest one that can run there. Nothing falls back silently:
a backend the user named that cannot run raises `ConfigError` with the reason.
"""

import functools
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from mosaic_pretrain.errors import ConfigError
from mosaic_pretrain.model.alibi import alibi_bias
from mosaic_pretrain.model.padding import document_layout, from_document_batch, to_document_batch

logger = logging.getLogger(__name__)


@dataclass
class VarlenBatch:
    """What every layer's attention needs to know about one forward pass's documents.

    Built once per forward and shared by all layers, so per-batch structures (document layout,
    masks) are computed once, not once per layer.
    """

    cu_seqlens: torch.Tensor  # (documents + 1,) int32
    max_seqlen: int
    alibi_slopes: torch.Tensor  # (heads,) float32
    total_tokens: int  # cu_seqlens[-1], known on the host: reading it off the tensor would sync
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def num_documents(self) -> int:
        return self.cu_seqlens.numel() - 1

    def cached(self, key: object, build: Callable[[], object]) -> object:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def document_layout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`(document_ids, positions)` of every token, see `padding.document_layout`."""
        return self.cached(
            "document_layout", lambda: document_layout(self.cu_seqlens, self.total_tokens)
        )

    def key_is_real(self) -> torch.Tensor:
        """(documents, max_seqlen) bool: which slots of the per-document layout hold a token."""

        def build() -> torch.Tensor:
            lengths = self.cu_seqlens[1:] - self.cu_seqlens[:-1]
            slots = torch.arange(self.max_seqlen, device=self.cu_seqlens.device)
            return slots[None, :] < lengths[:, None]

        return self.cached("key_is_real", build)

    def alibi(self) -> torch.Tensor:
        """(heads, max_seqlen, max_seqlen) float32 ALiBi bias, built for this batch's length only.

        Built per batch rather than kept in a buffer: it costs one small elementwise kernel, grows
        with no fixed maximum, and cannot be overwritten by DDP's buffer broadcast.
        """
        return self.cached("alibi", lambda: alibi_bias(self.alibi_slopes, self.max_seqlen))


AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, VarlenBatch, float], torch.Tensor]


def _per_document(batch: VarlenBatch, *tokens: torch.Tensor) -> list[torch.Tensor]:
    """(total, heads, dim) -> (documents, heads, max_seqlen, dim), zero-padded per document."""
    document_ids, positions = batch.document_layout()
    return [
        to_document_batch(
            t, document_ids, positions, batch.num_documents, batch.max_seqlen
        ).transpose(1, 2)
        for t in tokens
    ]


def _back_to_tokens(batch: VarlenBatch, per_document: torch.Tensor) -> torch.Tensor:
    """(documents, heads, max_seqlen, dim) -> (total, heads, dim)."""
    document_ids, positions = batch.document_layout()
    return from_document_batch(per_document.transpose(1, 2), document_ids, positions)


def eager_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    batch: VarlenBatch,
    dropout_p: float,
) -> torch.Tensor:
    """The reference every other backend is tested against: plain tensors, float32 softmax."""
    q, k, v = (t.float() for t in _per_document(batch, query, key, value))
    scale = query.shape[-1] ** -0.5
    scores = (q @ k.transpose(-1, -2)) * scale + batch.alibi()  # (docs, heads, L, L)
    padding_keys = ~batch.key_is_real()[:, None, None, :]
    scores = scores.masked_fill(padding_keys, float("-inf"))
    probabilities = F.dropout(scores.softmax(dim=-1), p=dropout_p)
    return _back_to_tokens(batch, probabilities @ v).to(query.dtype)


def sdpa_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    batch: VarlenBatch,
    dropout_p: float,
) -> torch.Tensor:
    """Torch's fused attention with ALiBi and key padding folded into one additive mask."""

    def build_mask() -> torch.Tensor:
        padding_keys = ~batch.key_is_real()[:, None, None, :]  # (docs, 1, 1, L)
        mask = batch.alibi()[None].masked_fill(padding_keys, float("-inf"))  # (docs, heads, L, L)
        return mask.to(query.dtype)

    mask = batch.cached(("sdpa_mask", query.dtype), build_mask)
    q, k, v = _per_document(batch, query, key, value)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    return _back_to_tokens(batch, out)


@functools.cache
def _compiled_flex_attention() -> Callable:
    from torch.nn.attention.flex_attention import flex_attention

    # The unpadded length changes every batch: compiled for dynamic sizes at once, rather than
    # for the first batch's and again once torch sees the length change.
    return torch.compile(flex_attention, dynamic=True)


# FlexAttention's tile: the kernels skip or fully compute BLOCK x BLOCK tiles of the score matrix.
FLEX_BLOCK = 128


def document_tiles(
    document_ids: torch.Tensor, cu_seqlens: torch.Tensor, total: int, block: int = FLEX_BLOCK
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which (query tile, key tile) pairs of the (T, T) scores hold pairs of one document:
    `(partial, full)`, each (tiles, tiles) bool; `full` tiles lie inside one document entirely
    (no mask needed in them), `partial` tiles need the per-token mask.

    Worked out from the document bounds alone, with no (T, T) mask: documents are contiguous,
    so query tile i, whose tokens run from document a to document b, meets exactly the key tiles
    from the one holding document a's first token to the one holding document b's last. Plain
    tensor arithmetic, so it runs on any device, traced by torch.compile, without a sync.
    """
    tiles = -(-total // block)
    starts = torch.arange(tiles, device=document_ids.device) * block
    ends = (starts + block).clamp(max=total)  # exclusive
    first_document = document_ids[starts]  # (tiles,)
    last_document = document_ids[ends - 1]
    bounds = cu_seqlens.long()
    lowest = bounds[first_document] // block  # first key tile each query tile meets
    highest = (bounds[last_document + 1] - 1) // block  # last one
    tile = torch.arange(tiles, device=document_ids.device)
    meets = (tile[None, :] >= lowest[:, None]) & (tile[None, :] <= highest[:, None])
    # Inside one document and of full size (the last tile may be short).
    whole = (first_document == last_document) & (ends - starts == block)
    full = (
        meets
        & whole[:, None]
        & whole[None, :]
        & (first_document[:, None] == first_document[None, :])
    )
    return meets & ~full, full


def _as_block_lists(tiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, columns) bool -> BlockMask's form: per row, how many columns, and which first."""
    counts = tiles.sum(dim=-1, dtype=torch.int32)
    order = torch.argsort(tiles.to(torch.int8), dim=-1, descending=True, stable=True)
    return counts[None, None], order.to(torch.int32)[None, None]  # (1, 1, rows), (1, 1, rows, cols)


def _document_block_mask(batch: VarlenBatch):
    """A block mask letting tokens attend within their own document only, built from the
    document bounds (`document_tiles`): no (T, T) mask is ever evaluated, nothing syncs, and
    torch.compile traces it into the forward's graph."""
    from torch.nn.attention.flex_attention import BlockMask

    document_ids, _ = batch.document_layout()
    total = batch.total_tokens
    partial, full = document_tiles(document_ids, batch.cu_seqlens, total)

    def same_document(b, h, q_idx, kv_idx):
        return document_ids[q_idx] == document_ids[kv_idx]

    return BlockMask.from_kv_blocks(
        *_as_block_lists(partial),
        *_as_block_lists(full),
        BLOCK_SIZE=FLEX_BLOCK,
        mask_mod=same_document,
        seq_lengths=(total, total),
    )


def flex_block_mask(batch: VarlenBatch):
    """The batch's document block mask, built on first use and shared by every layer."""
    return batch.cached("flex_block_mask", lambda: _document_block_mask(batch))


def flex_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    batch: VarlenBatch,
    dropout_p: float,
) -> torch.Tensor:
    """FlexAttention over the whole unpadded batch as one sequence, documents as a block mask.

    Documents are contiguous in the unpadded layout, so the token distance `|q - k|` inside a
    document is exactly the ALiBi distance; the block mask lets the kernel skip every block pair
    that lies in two different documents.
    """
    from torch.nn.attention.flex_attention import flex_attention as eager_flex

    if dropout_p > 0:
        raise ConfigError(
            "attention_backend='flex' has no attention dropout: set "
            "attention_probs_dropout_prob=0.0 or choose attention_backend='sdpa'"
        )
    block_mask = flex_block_mask(batch)
    slopes = batch.alibi_slopes.float()

    def alibi(score, b, h, q_idx, kv_idx):
        return score - slopes[h] * (q_idx - kv_idx).abs()

    # FlexAttention's CUDA kernel exists only compiled: an eager model compiles this call alone,
    # a compiled model traces the plain function into its own graph.
    compile_alone = query.device.type == "cuda" and not torch.compiler.is_compiling()
    attend = _compiled_flex_attention() if compile_alone else eager_flex
    q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (query, key, value))  # (1, heads, T, dim)
    out = attend(q, k, v, score_mod=alibi, block_mask=block_mask)
    return out.squeeze(0).transpose(0, 1)


def _check_flash_inputs(query: torch.Tensor) -> None:
    if query.device.type != "cuda" or query.dtype not in (torch.float16, torch.bfloat16):
        raise ConfigError(
            f"attention_backend='flash_attn' needs CUDA tensors in fp16/bf16, got {query.dtype} "
            f"on {query.device.type}: train with precision amp_bf16 on a GPU, or choose "
            "attention_backend='sdpa'"
        )


def flash_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    batch: VarlenBatch,
    dropout_p: float,
) -> torch.Tensor:
    """FlashAttention-2's varlen kernel: takes the unpadded layout and ALiBi slopes natively."""
    from flash_attn import flash_attn_varlen_func

    _check_flash_inputs(query)
    return flash_attn_varlen_func(
        query,
        key,
        value,
        cu_seqlens_q=batch.cu_seqlens,
        cu_seqlens_k=batch.cu_seqlens,
        max_seqlen_q=batch.max_seqlen,
        max_seqlen_k=batch.max_seqlen,
        dropout_p=dropout_p,
        causal=False,
        alibi_slopes=batch.alibi_slopes.float(),  # flash-attn requires float32 slopes
    )


ATTENTION_BACKENDS: dict[str, AttentionFn] = {
    "eager": eager_attention,
    "sdpa": sdpa_attention,
    "flex": flex_attention,
    "flash_attn": flash_attention,
}
# Per-batch work a backend does once, before the first layer, rather than inside a layer.
ATTENTION_PREPARATION: dict[str, Callable[[VarlenBatch], object]] = {"flex": flex_block_mask}
AUTO = "auto"
ATTENTION_BACKEND_CHOICES: tuple[str, ...] = (*ATTENTION_BACKENDS, AUTO)


@functools.cache
def _flash_attn_import_error() -> str | None:
    try:
        importlib.import_module("flash_attn")
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


def backend_unavailable_reason(name: str) -> str | None:
    """Why the named backend cannot be built in this environment, or None if it can."""
    if name == "flash_attn" and (reason := _flash_attn_import_error()) is not None:
        return (
            f"the flash-attn package cannot be imported ({reason}); install it with "
            "`pip install 'mosaic_pretrain[gpu]'` on a CUDA machine"
        )
    if name == "flex":
        try:
            importlib.import_module("torch.nn.attention.flex_attention")
        except ImportError as error:
            return f"this torch ({torch.__version__}) has no FlexAttention ({error})"
    return None


def check_backend_name(name: str) -> None:
    """Raise ConfigError for an unknown or uninstallable backend name."""
    if name not in ATTENTION_BACKEND_CHOICES:
        raise ConfigError(
            f"attention_backend={name!r} is unknown; choose one of "
            f"{', '.join(ATTENTION_BACKEND_CHOICES)}"
        )
    if name != AUTO and (reason := backend_unavailable_reason(name)) is not None:
        raise ConfigError(f"attention_backend={name!r} cannot run: {reason}")


# FlashAttention-2 runs on Ampere (compute capability 8.0) and newer.
FLASH_ATTN_MIN_CAPABILITY = (8, 0)


def _flash_attn_can_run(device: torch.device, dtype: torch.dtype) -> bool:
    return (
        dtype in (torch.float16, torch.bfloat16)
        and backend_unavailable_reason("flash_attn") is None
        and torch.cuda.get_device_capability(device) >= FLASH_ATTN_MIN_CAPABILITY
    )


def resolve_backend(
    name: str, device: torch.device, dtype: torch.dtype, attention_dropout: float
) -> str:
    """The concrete backend for `name` on `device` computing in `dtype`; `auto` picks the fastest
    that can run there.

    On CUDA: flash_attn when installed and the compute dtype is fp16/bf16 on an Ampere or newer
    GPU (hand-written varlen kernel with ALiBi built in), else compiled flex unless attention
    dropout is on (flex has none), else sdpa. On CPU: sdpa, which beats the eager reference and
    uncompiled flex.
    """
    if name != AUTO:
        return name
    if device.type == "cuda":
        if _flash_attn_can_run(device, dtype):
            return "flash_attn"
        if attention_dropout == 0.0 and backend_unavailable_reason("flex") is None:
            return "flex"
    return "sdpa"
