"""The SARM evaluation (`physteer sarm-eval`): config, eval, data, summary, sweep, trade-off,
probe, plots and terminal tables."""
