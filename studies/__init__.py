"""Named studies built on the runner, each a module or a small folder with its config
dataclass, the function that runs it and its summary (and its own tables and plots):

- studies.env_demo: the scripted expert over color × material × profile.
- studies.agent_eval: an agent (planner or VLA) in closed loop, with the material-pattern control.
- studies.collect: labelled frames → tap-layer activations in an ActivationStore.
- studies.world_model: the holding-state world-model probe.
- studies.bench: the closed-loop benchmark driver (`physteer bench`).
- studies.decodability: where a π0 carries material, stream × layer, beside random weights.
- studies.sarm: the SARM evaluation (fit, calibration, perturbations, sweep, trade-off, probe).
- studies.vla: graded steering of the VLA's handling.
- studies.demo: the demo as a sequence of studies, and its report.

Imports every package below it (storage, envs, sae, agents, monitors, rollouts, reports);
never cli.
"""
