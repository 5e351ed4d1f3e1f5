"""The VLA steering study (`physteer vla-study`): config, study, summary, report."""
