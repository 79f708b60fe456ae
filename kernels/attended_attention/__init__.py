"""Attention of each query over its sequence's attended set (a CSR list of KV-pool slots).

The dispatcher picks an implementation by device: the pure-torch reference everywhere for now; on CUDA
the serving path hands the same CSR (``kv_indptr``/``kv_slots``) to FlashInfer's paged wrappers with
page_size 1, so only the index build is ours there.
"""

from .reference import attended_attention_reference

__all__ = ["attended_attention", "attended_attention_reference"]


def attended_attention(*args, **kwargs):
    """See `attended_attention_reference` for the contract."""
    return attended_attention_reference(*args, **kwargs)
