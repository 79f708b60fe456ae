"""The CPU vision-attention hook: block-diagonal attention by segments equals SGLang's masked SDPA."""

import pytest
import torch

from mosaic_sglang.integration.cpu_compat.vision_attention import _forward, segmented_attention


def _sglang_attention(**overrides):
    from sglang.srt.layers.attention.vision import VisionSdpaAttention

    kwargs = dict(head_dim=16, num_heads=2, num_kv_heads=2, flatten_batch=True)
    kwargs.update(overrides)
    return VisionSdpaAttention(**kwargs)


@pytest.mark.parametrize("bounds", [[0, 64, 128, 192, 200], [0, 7, 7, 70, 133], [0, 133]], ids=["equal+tail", "empty+odd", "one"])
def test_segments_match_sglangs_masked_attention(bounds):
    torch.manual_seed(0)
    attn = _sglang_attention()
    s = bounds[-1]
    q, k, v = (torch.randn(s, 2, 16) for _ in range(3))
    cu = torch.tensor(bounds, dtype=torch.int32)
    expected = attn.forward(q, k, v, bsz=1, cu_seqlens=cu)  # SGLang's own (masked) path
    got = _forward(lambda *a, **kw: pytest.fail("the hook must not fall back here"), attn, q, k, v, 1, cu_seqlens=cu)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # a wrong segmentation is caught: attention across the first boundary differs
    if len(bounds) > 2 and bounds[1] > 0:
        wrong = segmented_attention(q, k, v, torch.tensor([0, s]), scale=attn.scale)
        assert not torch.allclose(wrong, expected, atol=1e-3)


def test_other_layouts_go_to_sglang():
    attn = _sglang_attention(flatten_batch=False)
    q = torch.randn(10, 2, 16)
    calls = []
    _forward(lambda *a, **kw: calls.append(1), attn, q, q, q, 1, cu_seqlens=torch.tensor([0, 10]))
    mask_given = _sglang_attention()
    _forward(lambda *a, **kw: calls.append(2), mask_given, q, q, q, 1, cu_seqlens=torch.tensor([0, 10]),
             attention_mask=torch.ones(1, 10, 10, dtype=torch.bool))
    assert calls == [1, 2]
    for name in ("flatten_batch", "softmax_in_single_precision", "num_heads", "num_kv_heads", "head_size", "scale",
                 "dropout"):
        assert hasattr(attn, name), name  # the attributes the hook reads
