"""Which of a model's attention layers the ``mosaic`` backend can serve, checked once when it starts.

Mosaic's runners (torch reference, Triton, FlashInfer) compute plain softmax attention over a list of KV
slots. A decoder layer that asks for more — a sliding window (the list would have to be clipped to it) or a
logit soft cap (the scores would have to pass through ``cap · tanh(s / cap)``) — would be served wrong,
so the backend refuses the model at start, naming the layer, the attribute, what it supports and what the
layer has. Cross-attention and encoder-only layers are not Mosaic's: SGLang's torch-native path serves them.
"""

from __future__ import annotations

from typing import Iterator, Tuple

from torch import nn

from sglang.srt.layers.radix_attention import AttentionType, RadixAttention

__all__ = ["mosaic_layers", "check_attention_layers"]


def mosaic_layers(model: nn.Module) -> Iterator[Tuple[str, RadixAttention]]:
    """The model's decoder attention layers Mosaic serves, as ``(module name, layer)``."""
    for name, module in model.named_modules():
        if isinstance(module, RadixAttention) and not module.is_cross_attention \
                and module.attn_type != AttentionType.ENCODER_ONLY:
            yield name, module


def check_attention_layers(model: nn.Module) -> None:
    """Raise ``ValueError`` naming the first layer Mosaic cannot serve (see module docstring)."""
    for name, layer in mosaic_layers(model):
        where = f"mosaic attention backend: layer {layer.layer_id} ({name or 'the model'})"
        if layer.sliding_window_size is not None and layer.sliding_window_size > -1:
            raise ValueError(f"{where} has sliding_window_size={layer.sliding_window_size}; Mosaic serves full "
                             f"attention only (expected -1): sliding-window layers are not supported")
        if layer.logit_cap and layer.logit_cap > 0:
            raise ValueError(f"{where} has logit_cap={layer.logit_cap}; Mosaic serves uncapped attention only "
                             f"(expected 0): logit soft-capping is not supported")
