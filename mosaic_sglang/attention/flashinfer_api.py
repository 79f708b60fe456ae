"""The FlashInfer API the Mosaic runner relies on, named in one place (checked by
``tests/test_sglang_symbols.py`` against the installed ``flashinfer-python``).

One FlashInfer ``plan`` serves every layer of a forward because a plan depends only on lengths (the
``indptr``): the paged wrappers' ``run`` reads the page list from a private attribute at run time, so
pointing that attribute at layer ``l``'s list before layer ``l``'s call attends that layer's selection
under the shared plan. This holds for the ``fa2`` backends only (cuDNN, trtllm-gen and cute-dsl build
their block tables at plan time).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["INDICES_BUFFER_ATTR", "DECODE_WRAPPER", "PREFILL_WRAPPER", "FA2", "use_layer_indices"]

INDICES_BUFFER_ATTR = "_paged_kv_indices_buf"
"""The wrappers' page-list buffer (``int32 [nnz]``), read by ``run`` (private to FlashInfer 0.7.2)."""
DECODE_WRAPPER = "BatchDecodeWithPagedKVCacheWrapper"
PREFILL_WRAPPER = "BatchPrefillWithPagedKVCacheWrapper"
FA2 = "fa2"
"""The only FlashInfer backend whose ``run`` reads the page list at run time."""


def use_layer_indices(wrapper: Any, indices: torch.Tensor) -> None:
    """Point ``wrapper``'s page list at ``indices`` (``int32 [nnz]``, on the wrapper's device, ``nnz`` equal to
    the planned ``indptr[-1]``) for its next ``run``: one layer's list under the forward's single plan."""
    setattr(wrapper, INDICES_BUFFER_ATTR, indices)
