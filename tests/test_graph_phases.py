"""The backend checks the CUDA-graph phases SGLang resolved (explicit selectors can override the
``--disable-*-cuda-graph`` switches ``--enable-mosaic`` sets): prefill graphs are refused, decode graphs
need ``graph_text_tokens > 0``. On SGLang's own ``CudaGraphConfig``."""

from __future__ import annotations

import pytest

from sglang.srt.model_executor.cuda_graph_config import Backend, Phase, default_cuda_graph_config, with_phase

from mosaic_sglang.config import MosaicConfigError
from mosaic_sglang.integration.graph_phases import check_graph_phases


def _config(prefill: str, decode: str):
    config = with_phase(default_cuda_graph_config(), Phase.PREFILL, backend=prefill)
    return with_phase(config, Phase.DECODE, backend=decode)


def test_what_enable_mosaic_sets_is_served():
    check_graph_phases(_config(Backend.DISABLED, Backend.DISABLED), graph_text_tokens=0)
    check_graph_phases(_config(Backend.DISABLED, Backend.FULL), graph_text_tokens=256)  # captured decode steps


@pytest.mark.parametrize("prefill", [Backend.FULL, Backend.BREAKABLE])
def test_prefill_graphs_are_refused_naming_the_resolved_backend(prefill):
    for tokens in (0, 256):
        with pytest.raises(MosaicConfigError, match=f"prefill CUDA graphs: expected .* got prefill backend '{prefill}'"):
            check_graph_phases(_config(prefill, Backend.DISABLED), graph_text_tokens=tokens)


def test_decode_graphs_need_graph_text_tokens():
    with pytest.raises(MosaicConfigError, match="'graph_text_tokens': expected N > 0 .*decode backend 'full'.* got 0"):
        check_graph_phases(_config(Backend.DISABLED, Backend.FULL), graph_text_tokens=0)
