"""Which CUDA-graph phases SGLang resolved, checked when the ``mosaic`` backend starts.

``--enable-mosaic`` sets ``--disable-prefill-cuda-graph`` (and ``--disable-decode-cuda-graph`` unless
``graph_text_tokens > 0``), but SGLang lets ``--cuda-graph-backend-prefill`` / ``--cuda-graph-backend-decode``
and ``--cuda-graph-config`` override those switches. Its resolved configuration (``get_exec().graph
.cuda_graph_config``, published before the attention backend is built) is what its graph runners obey, so
that is what is checked: prefill graphs are never served (an extend step's lists are planned on the host
inside the forward), decode graphs only with ``graph_text_tokens > 0`` (`decode_graphs`).
"""

from __future__ import annotations

from typing import Any, Optional

from ..config import MosaicConfigError

__all__ = ["check_graph_phases", "resolved_graph_config"]


def check_graph_phases(graph_config: Optional[Any], graph_text_tokens: int) -> None:
    """Raise `MosaicConfigError` naming the phase and its resolved backend where Mosaic cannot serve it.

    Args:
        graph_config: SGLang's resolved ``CudaGraphConfig`` (``.prefill.backend``, ``.decode.backend``), or
            None (not published: nothing to check).
        graph_text_tokens: `MosaicConfig.graph_text_tokens` (0: decode steps run eagerly).
    """
    from sglang.srt.model_executor.cuda_graph_config import Backend

    if graph_config is None:
        return

    prefill = graph_config.prefill.backend
    if prefill != Backend.DISABLED:
        raise MosaicConfigError(
            f"--enable-mosaic with prefill CUDA graphs: expected the prefill phase disabled (--enable-mosaic sets "
            f"--disable-prefill-cuda-graph; --cuda-graph-backend-prefill or --cuda-graph-config overrode it), got "
            f"prefill backend {prefill!r}")
    decode = graph_config.decode.backend
    if decode != Backend.DISABLED and not graph_text_tokens:
        raise MosaicConfigError(
            f"mosaic config field 'graph_text_tokens': expected N > 0 with decode CUDA graphs on (decode backend "
            f"{decode!r}; or keep --disable-decode-cuda-graph, which --enable-mosaic sets), got 0")


def resolved_graph_config() -> Optional[Any]:
    """SGLang's resolved ``CudaGraphConfig`` in this scheduler process, where its graph setup reads it
    (``check_cuda_graph_backend``); None before SGLang published it (nothing to check here then; the
    backend's ``init_cuda_graph_state`` still refuses decode graphs without ``graph_text_tokens``)."""
    from sglang.srt.runtime_context import get_exec

    try:
        return get_exec().graph.cuda_graph_config
    except ValueError:
        return None
