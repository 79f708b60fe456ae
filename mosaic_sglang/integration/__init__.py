"""Integration: every SGLang touch point of mosaic-sglang, and nothing else.

The plugin entry (`plugin.register`), the launch flags and Engine keyword arguments (`launch_flags`,
`options`), the ``mosaic`` attention backend (`attention_backend`: builds `RequestLayout`s, asks the
serving policy, runs attention), the ``mosaic`` radix-cache backend and its offload of tree values
(`radix_cache`, `prefix_offload`), the per-process runtime (`runtime`), response statistics
(`output_streamer`), Prometheus series (`prometheus_metrics`), frame ids from SGLang's multimodal items
(`frame_ids`), the start-up refusals of what Mosaic cannot serve (`launch_flags`, `graph_phases`,
`attention_layers`), the host tier in SGLang's idle leak check (`host_row_check`) and the CPU shims
(`cpu_compat`). Only this package imports SGLang, and importing the package itself does not.
"""

__all__ = ["plugin", "launch_flags", "options", "attention_backend", "attention_layers", "radix_cache",
           "prefix_offload", "runtime", "output_streamer", "prometheus_metrics", "frame_ids", "graph_phases",
           "host_row_check"]
