"""The closed-loop steering benchmark (`physteer steer-bench`): every method, matched by effect."""
