"""Which attention runner the Mosaic backend uses (`mosaic_sglang.attention`), from the device and
``MOSAIC_ATTENTION_RUNNER``, with what SGLang gives the FlashInfer route: its shared FlashInfer
workspace buffer and its rule for tensor-core decode.

* ``auto`` (default): FlashInfer's fa2 paged wrappers on CUDA when ``flashinfer`` imports; else the Triton
  kernels on CUDA; the torch reference on CPU (``MOSAIC_TRITON_ATTENTION=1`` picks Triton there: tests
  under the interpreter).
* ``flashinfer`` / ``triton`` / ``reference``: that runner (FlashInfer needs CUDA and ``flashinfer``).
* ``fake-flashinfer``: the FlashInfer route with `mosaic_sglang.testing.fake_flashinfer` standing in for
  ``flashinfer`` (CPU tests of the glue).

Every runner comes with a fallback for the plans it cannot serve (FlashInfer: layers of different
lengths): the Triton runner on CUDA, the reference on CPU.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from typing import NamedTuple

import torch

from ..attention import AttentionRunner, FlashInferRunner, TorchRunner, TritonRunner
from ..config import MOSAIC_ATTENTION_RUNNER, MOSAIC_TRITON_ATTENTION, MosaicConfigError

__all__ = ["Runners", "choose_runners"]

logger = logging.getLogger(__name__)

_FAKE = "mosaic_sglang.testing.fake_flashinfer"
_FAKE_WORKSPACE_BYTES = 1 << 16


class Runners(NamedTuple):
    """The backend's runner and the one it falls back to for plans the first cannot serve."""

    primary: AttentionRunner
    fallback: AttentionRunner


def choose_runners(*, device: torch.device, num_layers: int, num_qo_heads: int, num_kv_heads: int, head_dim: int,
                   dtype: torch.dtype) -> Runners:
    """The runners for a backend whose pool lives on ``device`` (see the module docstring).

    Raises:
        MosaicConfigError: ``MOSAIC_ATTENTION_RUNNER`` asks for a route this machine cannot run.
    """
    choice = MOSAIC_ATTENTION_RUNNER.read()
    cuda = device.type == "cuda"
    if choice == "auto":
        if cuda:
            choice = "flashinfer" if importlib.util.find_spec("flashinfer") is not None else "triton"
        else:
            choice = "triton" if MOSAIC_TRITON_ATTENTION.read() else "reference"
    fallback = TritonRunner() if cuda or choice == "triton" else TorchRunner()
    if choice in ("reference", "triton"):
        return Runners(TorchRunner() if choice == "reference" else TritonRunner(), fallback)
    if choice == "flashinfer" and not cuda:
        raise MosaicConfigError(f"environment variable {MOSAIC_ATTENTION_RUNNER.name}: expected 'flashinfer' only "
                                f"with a CUDA KV pool, got 'flashinfer' with the pool on {device}")
    fake = choice == "fake-flashinfer"
    flashinfer = importlib.import_module(_FAKE if fake else "flashinfer")
    workspace = torch.empty(_FAKE_WORKSPACE_BYTES, dtype=torch.uint8, device=device) if fake else _sglang_workspace(device)
    runner = FlashInferRunner(flashinfer, workspace, num_layers=num_layers, num_qo_heads=num_qo_heads,
                              num_kv_heads=num_kv_heads, head_dim=head_dim, dtype=dtype,
                              use_tensor_cores=_tensor_core_decode(dtype, num_qo_heads, num_kv_heads))
    logger.info("mosaic attention: %s paged wrappers, one plan per forward (fallback: %s)",
                "fake FlashInfer" if fake else "FlashInfer", fallback.name)
    return Runners(runner, fallback)


def _sglang_workspace(device: torch.device) -> torch.Tensor:
    """SGLang's process-wide FlashInfer float workspace (the one its own FlashInfer backend shares)."""
    from sglang.srt.environ import envs
    from sglang.srt.runtime_context import get_buffer

    return get_buffer("flashinfer_workspace", lambda: torch.empty(
        envs.SGLANG_FLASHINFER_WORKSPACE_SIZE.get(), dtype=torch.uint8, device=device))


def _tensor_core_decode(dtype: torch.dtype, num_qo_heads: int, num_kv_heads: int) -> bool:
    """SGLang's own choice for its FlashInfer decode wrappers (tensor cores for GQA groups of 4 and more)."""
    from sglang.srt.layers.attention.flashinfer_backend import should_use_tensor_core

    return should_use_tensor_core(kv_cache_dtype=dtype, num_attention_heads=num_qo_heads, num_kv_heads=num_kv_heads)
