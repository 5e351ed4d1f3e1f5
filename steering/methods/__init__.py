"""Built-in steering methods, one per file, each registered by name (steering.registry)."""
