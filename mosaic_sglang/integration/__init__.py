"""Every SGLang touch point of mosaic-sglang lives in this package (plugin entry, flags, attention
backend, radix-cache backend, CPU shims). Importing it does not import SGLang."""
