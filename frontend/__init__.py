"""Frontend of mosaic-sglang (installed as ``mosaic_sglang.frontend``): video files and sgl programs."""
