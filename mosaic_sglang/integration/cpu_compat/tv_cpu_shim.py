"""Makes PyPI's torchvision 0.28 importable beside the CPU build of torch 2.13 (CPU venvs only).

torchvision's compiled ops link CUDA libraries, so on a CPU torch they never register and
``torchvision/_meta_registrations.py`` fails with ``operator torchvision::nms does not exist``.
Defining the two schemas before torchvision is first imported is enough for the transforms that
SGLang and the Qwen-VL processors use. Installed by `mosaic_sglang.integration.cpu_compat` as a
``.pth`` line, so SGLang's spawned server processes get it too. It also defaults
``SGLANG_USE_CPU_ENGINE=1``: SGLang treats a CUDA-less platform as CPU only with that variable.
"""

import os
import sys

_LIB = None


def install() -> None:
    """Define ``torchvision::nms``/``qnms`` schemas unless the real ops are present."""
    global _LIB
    import torch

    try:
        torch.ops.torchvision.nms.default
        return
    except Exception:
        pass
    lib = torch.library.Library("torchvision", "FRAGMENT")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIB = lib


class _Hook:
    """A `sys.meta_path` finder that runs `install()` right before torchvision is first imported."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            install()
        return None


def install_hook() -> None:
    os.environ.setdefault("SGLANG_USE_CPU_ENGINE", "1")
    if not any(isinstance(f, _Hook) for f in sys.meta_path):
        sys.meta_path.insert(0, _Hook())
