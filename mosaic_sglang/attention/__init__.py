"""Attention over the attended lists: one runner per kernel family, chosen once per backend.

Every runner serves the same contract (`runner.AttentionRunner`): `begin_forward` once per forward with
the attention plan (one ``kv_indptr`` for every layer, `serving.ForwardPlan`), then `run_layer` per layer
with that layer's slots. `TorchRunner` is the reference (the CPU serving path), `TritonRunner` runs the
project's split-K decode kernel and SGLang's extend kernel, `FlashInferRunner` plans FlashInfer's fa2
paged wrappers once per forward and points them at each layer's list (`flashinfer_api`). A runner that
cannot serve a plan (``serves`` false: per-layer lengths differ) hands the forward to its fallback.
"""

from .flashinfer_api import INDICES_BUFFER_ATTR, use_layer_indices
from .flashinfer_runner import FlashInferRunner
from .runner import AttentionRunner, LayerLists
from .torch_runner import TorchRunner
from .triton_runner import TritonRunner

__all__ = [
    "AttentionRunner",
    "LayerLists",
    "TorchRunner",
    "TritonRunner",
    "FlashInferRunner",
    "INDICES_BUFFER_ATTR",
    "use_layer_indices",
]
