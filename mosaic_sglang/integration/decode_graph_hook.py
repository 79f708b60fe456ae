"""The decode CUDA-graph runner asks Mosaic whether a decode step may replay its graph.

SGLang's ``DecodeCudaGraphRunner.can_run_graph(forward_batch)`` decides between replaying a captured decode
graph and the eager forward from the batch size alone. A Mosaic step replays only when its lists fit the
static buffers (`decode_graphs.DecodeGraphs`): an AROUND hook plans the step right there, with the real
batch (the replay's own metadata call sees a padded view without request ids), and answers False for a step
that must run eagerly (a re-selection, host-resident clusters, a list over the capacity); that step's eager
metadata call then keeps the plan made here.
"""

from __future__ import annotations

__all__ = ["CAN_RUN_GRAPH", "PAD_TO_BUCKET", "can_run_graph_hook", "register_decode_graph_hook"]

CAN_RUN_GRAPH = "sglang.srt.model_executor.runner.decode_cuda_graph_runner.DecodeCudaGraphRunner.can_run_graph"
PAD_TO_BUCKET = "sglang.srt.model_executor.runner.base_cuda_graph_runner.BaseCudaGraphRunner._pad_to_bucket"


def can_run_graph_hook(original, runner, forward_batch) -> bool:
    """AROUND ``can_run_graph``: SGLang's answer, narrowed by Mosaic's for a decode step of its backend."""
    from .attention_backend import MosaicAttnBackend

    if not original(runner, forward_batch):
        return False
    backend = getattr(runner, "attn_backend", None)
    if not isinstance(backend, MosaicAttnBackend):
        return True
    if not forward_batch.forward_mode.is_decode():  # idle batches (and anything else) run eagerly
        return False
    padded = runner._pad_to_bucket(int(forward_batch.batch_size), runner.capture_bs)
    return backend.prepare_graph_step(forward_batch, padded)


def register_decode_graph_hook(registry, hook_type) -> None:
    registry.register(CAN_RUN_GRAPH, can_run_graph_hook, hook_type.AROUND)
