"""Testing helpers that ship with the package: tiny random vision-language and text models built
offline from ``transformers`` configs (`tiny_models.build_tiny_model`), so the tests, the demo and the
benchmarks run SGLang end to end on any machine without downloading weights.
"""

__all__ = ["tiny_models", "bad_media", "host_sync"]
