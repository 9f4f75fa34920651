"""Base services every layer may use: errors, config schema, registries, atomic I/O, checkpoint format,
runtime (device, precision, threads), distributed context, build context and the study-folder layout."""
