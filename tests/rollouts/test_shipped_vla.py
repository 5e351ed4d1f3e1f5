"""The shipped tiny VLA in closed loop, test-sized: 5 seeds per color × material (the first 5 of
the README's 25, seeds 2,000,000+; there 10/10 fragile succeed and stay intact, 9/10 rigid
succeed, mean peak grip 7.1 N and 33.0 N). One failure of slack per material: the batches here
group the lanes differently, which may move a float."""

from __future__ import annotations

import numpy as np

from agents.vla_agent import VLAAgent
from studies.agent_eval import run_cells


def test_shipped_vla_handles_each_material_as_it_should():
    agent = VLAAgent("tiny-vla", tap_layer=None, device="cpu")
    try:
        rows = run_cells(agent, seeds=5, first_seed=2_000_000, envs=4)
    finally:
        agent.close()
    fragile = [r for r in rows if r["material"] == "fragile"]
    rigid = [r for r in rows if r["material"] == "rigid"]
    assert len(fragile) == len(rigid) == 10
    assert sum(not r["broken"] for r in fragile) >= 8 and sum(r["success"] for r in fragile) >= 8
    assert sum(r["success"] for r in rigid) >= 8
    assert (
        np.mean([r["peak_grip_force"] for r in fragile])
        < 15.0
        < 25.0
        < np.mean([r["peak_grip_force"] for r in rigid])
    )
