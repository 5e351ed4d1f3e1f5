"""The monitor benchmark: scorers side by side on a policy's own failures (`physteer monitor-bench`)."""
