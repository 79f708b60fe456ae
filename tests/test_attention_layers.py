"""The backend refuses, at start and naming the layer and attribute, a model whose decoder attention layers
Mosaic would serve wrong (sliding window, logit soft cap); it serves plain layers and leaves cross-attention
and encoder-only layers to SGLang. Built on SGLang's real ``RadixAttention``."""

from __future__ import annotations

import pytest
from torch import nn

from sglang.srt.layers.radix_attention import AttentionType, RadixAttention

from mosaic_sglang.integration.attention_layers import check_attention_layers, mosaic_layers


def _model(**layer1) -> nn.Module:
    model = nn.Module()
    model.layers = nn.ModuleList([
        RadixAttention(4, 8, 8 ** -0.5, 2, layer_id=0),
        RadixAttention(4, 8, 8 ** -0.5, 2, layer_id=1, **layer1),
    ])
    return model


def test_plain_decoder_layers_are_served():
    model = _model()
    check_attention_layers(model)
    assert [(name, layer.layer_id) for name, layer in mosaic_layers(model)] == [("layers.0", 0), ("layers.1", 1)]


@pytest.mark.parametrize("option, value, named", [("sliding_window_size", 4096, "sliding_window_size=4096"),
                                                  ("logit_cap", 30.0, "logit_cap=30.0")])
def test_layers_mosaic_would_serve_wrong_are_refused_by_name(option, value, named):
    with pytest.raises(ValueError) as refused:
        check_attention_layers(_model(**{option: value}))
    message = str(refused.value)
    assert "layer 1 (layers.1)" in message and named in message and "expected" in message


def test_layers_that_are_not_mosaic_s_are_left_alone():
    cross = _model(logit_cap=30.0, is_cross_attention=True)
    encoder = _model(sliding_window_size=64, attn_type=AttentionType.ENCODER_ONLY)
    for model in (cross, encoder):
        check_attention_layers(model)
        assert [layer.layer_id for _, layer in mosaic_layers(model)] == [0]
