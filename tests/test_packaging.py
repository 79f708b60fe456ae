"""pyproject's explicit package list covers every package folder (find cannot see through the remap)."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REMAP = {"mosaic_sglang": "mosaic_sglang", "mosaic_sglang.kernels": "kernels", "mosaic_sglang.frontend": "frontend"}


def test_every_package_folder_is_listed_and_exists():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert cfg["package-dir"] == REMAP
    listed = set(cfg["packages"])
    found = set()
    for package, folder in REMAP.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            if "sgl_kernel_stub" in rel.parts:
                continue  # data files copied into site-packages by cpu_compat, not a package of ours
            found.add(".".join([package, *rel.parts]))
    assert listed == found


def test_no_top_level_kernels_package_is_installed():
    import mosaic_sglang.kernels as ours

    assert ours.__name__ == "mosaic_sglang.kernels"
    assert "kernels" not in {p.split(".")[0] for p in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]}
