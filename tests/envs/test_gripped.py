"""info["gripped"] beside info["holding"]."""

from __future__ import annotations


def test_env_reports_gripped_before_holding():
    """info["gripped"]: both fingers on the object, also while it still rests on the table
    (`holding` needs it lifted)."""
    from agents.protocol import ScriptedAgent
    from envs import FrankaPickEnv

    env = FrankaPickEnv(obs_mode="state")
    agent = ScriptedAgent()
    obs, info = env.reset(seed=3, options={"material": "rigid"})
    agent.reset(3)
    seen = []
    for _ in range(80):
        obs, _, term, trunc, info = env.step(agent.act(obs, info))
        seen.append((info["gripped"], info["holding"]))
        if info["holding"] or term or trunc:
            break
    env.close()
    assert info["holding"] and all(g for g, h in seen if h)
    assert any(g and not h for g, h in seen)  # gripped on the table before it is lifted
