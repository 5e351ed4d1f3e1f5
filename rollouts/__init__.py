"""The closed loop and the experiment engine: the one episode loop (rollouts.episode) and
its recorders, conditions (steering and perturbations), the runner, executors (serial,
processes, Ray) and rollouts.experiment.run_experiment, run logs, replay and re-simulation,
video, labelled frames and demonstrations, and a run's export as a LeRobot v3 dataset
(rollouts.lerobot).

Imports storage, envs, sae, agents and monitors; never reports, studies or cli (a run writes
episodes; reports are written by its caller).
"""
