"""Makes docs/img/hero.png, the README's picture: the agent's camera frame of the same scene
with a fragile (striped) and a rigid (plain) object, held by the gentle scripted expert at step 45 (a frame of an episode video, with its overlay).

    python docs/img/make_hero.py
"""

from pathlib import Path

import numpy as np

from agents.protocol import ExpertAgent
from rollouts.episode import ClosedLoop, EpisodeSpec
from storage import write_png


def main() -> None:
    frames = []
    loop = ClosedLoop(ExpertAgent("gentle"), image_size=384, record_decisions=False)
    try:
        for material in ("fragile", "rigid"):
            spec = EpisodeSpec(4, options={"color": "red", "material": material}, video=True)
            (record,) = loop.run([spec])
            frames.append(record.frames[min(45, len(record.frames) - 1)])
    finally:
        loop.close()
    gap = np.full((frames[0].shape[0], 8, 3), 255, dtype=np.uint8)
    write_png(
        Path(__file__).with_name("hero.png"), np.concatenate([frames[0], gap, frames[1]], axis=1)
    )


if __name__ == "__main__":
    main()
