"""Integration: every SGLang touch point of mosaic-sglang, and nothing else.

The plugin entry (`plugin.register`), the launch flags and Engine keyword arguments (`launch_flags`,
`options`), the ``mosaic`` attention backend (`attention_backend`: builds `RequestLayout`s, asks the
serving policy, runs attention; `attention_layers`: which model layers it can serve), the ``mosaic`` radix-cache backend and its offload of tree values
(`radix_cache`, `prefix_offload`), the per-process runtime (`runtime`), response statistics
(`output_streamer`), Prometheus series (`prometheus_metrics`), frame ids from SGLang's multimodal items
(`frame_ids`) and the CPU shims (`cpu_compat`). Only this package imports SGLang, and importing the
package itself does not.
"""

__all__ = ["plugin", "launch_flags", "options", "attention_backend", "attention_layers", "radix_cache", "prefix_offload", "runtime",
           "output_streamer", "prometheus_metrics", "frame_ids"]
