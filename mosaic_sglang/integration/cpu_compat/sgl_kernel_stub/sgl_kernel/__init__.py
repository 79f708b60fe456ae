"""Stand-in for the CPU build of ``sgl_kernel``, which is not published on PyPI (CPU venvs only).

With ``SGLANG_USE_CPU_ENGINE=1`` SGLang imports ``sgl_kernel``; a few modules also look up
``torch.ops.sgl_kernel.<op>`` at import time. This stub registers those ops as placeholders that
raise if called, and does not define ``convert_weight_packed``, so SGLang's AMX check is False and
every layer takes its pure-torch ``forward_native`` path. Installed into site-packages by
`mosaic_sglang.integration.cpu_compat`; never installed where CUDA exists.
"""

import torch

__version__ = "0.0.0+cpu.stub"

_IMPORT_TIME_OPS = [
    "fused_dual_residual_rmsnorm_cpu",
    "rmsnorm_cpu",
    "fused_qkvzba_split_reshape_cat_contiguous_cpu",
    "fused_moe_router_cpu",
    "fused_sigmoid_mul_cpu",
    "fused_qk_gemma_rmsnorm_cpu",
    "fused_qk_gemma_rmsnorm_with_gate_cpu",
]
_lib = torch.library.Library("sgl_kernel", "FRAGMENT")


def _raiser(name):
    def unavailable(*args, **kwargs):
        raise NotImplementedError(f"sgl_kernel stub: op '{name}' is not available on this CPU-only install")

    return unavailable


def _fused_sigmoid_mul_cpu(x, gate):
    x.mul_(torch.sigmoid(gate))


for _name in _IMPORT_TIME_OPS:
    if hasattr(torch.ops.sgl_kernel, _name):
        continue
    if _name == "fused_sigmoid_mul_cpu":
        _lib.define("fused_sigmoid_mul_cpu(Tensor(a!) x, Tensor gate) -> ()")
        _lib.impl(_name, _fused_sigmoid_mul_cpu, "CompositeExplicitAutograd")
    else:
        _lib.define(f"{_name}(Tensor[] args) -> Tensor")
        _lib.impl(_name, _raiser(_name), "CompositeExplicitAutograd")


def __getattr__(name):
    """``from sgl_kernel import X`` gives a function that raises if it is ever called."""
    if name.startswith("__"):
        raise AttributeError(name)
    return _raiser(name)
