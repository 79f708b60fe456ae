"""Kernels of mosaic-sglang (installed as ``mosaic_sglang.kernels``).

Each op lives in ``<op>/`` with a pure-torch ``reference.py`` (obviously right, fp32 accumulation) and,
where it pays, device implementations; ``<op>/__init__.py`` dispatches on the tensors' device.
"""

from .attended_attention import attended_attention

__all__ = ["attended_attention"]
