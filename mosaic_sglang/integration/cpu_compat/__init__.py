"""CPU-only shims that let stock ``sglang==0.5.23`` run on a machine without a GPU.

Two small pieces, installed into a CPU virtual environment's site-packages so that every process
SGLang spawns sees them (see `tv_cpu_shim` and ``sgl_kernel_stub/``):

* ``tv_cpu_shim.py`` + ``mosaic_tv_cpu_shim.pth``: torchvision op schemas, ``SGLANG_USE_CPU_ENGINE=1``;
* ``sgl_kernel/``: placeholder for the unpublished CPU build of ``sgl_kernel``.

``python -m mosaic_sglang.integration.cpu_compat install`` installs them (idempotent) and refuses
where CUDA is available; ``... uninstall`` removes them.
"""

from __future__ import annotations

import shutil
import site
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_PTH_NAME = "mosaic_tv_cpu_shim.pth"
_PTH_LINE = "import tv_cpu_shim; tv_cpu_shim.install_hook()\n"


def _site_packages() -> Path:
    return Path(site.getsitepackages()[0])


def install(target: Path | None = None) -> Path:
    """Copy the shims into ``target`` (default: this interpreter's site-packages); returns it."""
    import torch

    if torch.cuda.is_available():
        raise RuntimeError("cpu_compat: CUDA is available; the CPU shims must not be installed here")
    target = target or _site_packages()
    shutil.copy2(_HERE / "tv_cpu_shim.py", target / "tv_cpu_shim.py")
    (target / _PTH_NAME).write_text(_PTH_LINE)
    dst = target / "sgl_kernel"
    if dst.exists() and not (dst / "__init__.py").read_text().count("cpu.stub"):
        raise RuntimeError(f"cpu_compat: {dst} is a real sgl_kernel install; refusing to overwrite it")
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(_HERE / "sgl_kernel_stub" / "sgl_kernel", dst)
    return target


def uninstall(target: Path | None = None) -> None:
    target = target or _site_packages()
    for name in ("tv_cpu_shim.py", _PTH_NAME):
        (target / name).unlink(missing_ok=True)
    stub = target / "sgl_kernel" / "__init__.py"
    if stub.exists() and "cpu.stub" in stub.read_text():
        shutil.rmtree(target / "sgl_kernel")


def installed(target: Path | None = None) -> bool:
    target = target or _site_packages()
    return (target / _PTH_NAME).exists() and (target / "sgl_kernel" / "__init__.py").exists()


def main(argv: list[str]) -> None:
    command = argv[0] if argv else "install"
    if command == "install":
        print(f"cpu_compat: shims installed in {install()}")
    elif command == "uninstall":
        uninstall()
        print("cpu_compat: shims removed")
    else:
        raise SystemExit(f"usage: python -m mosaic_sglang.integration.cpu_compat [install|uninstall], got {command!r}")
