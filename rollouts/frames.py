"""Labelled camera frames for training and probing vision models, rendered through the one
closed loop (rollouts.episode).

Frames come from real episodes: a balanced design over color × material × shade × shape
(the env's seed blocks), random object pose and lighting (from the seed), and the arm caught
at a random point of a gentle expert's episode, so frames look like what an agent sees while
acting, not only the first frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from rollouts.episode import ClosedLoop, EpisodeSpec
from rollouts.recorders import Recorder, StepView

#: One frame per episode: TinyRenderer in one pass (the layered renderer's pixels, without a
#: static layer drawn for a single frame).
ONE_FRAME_RENDERER = "tiny"
#: Collection's frames (studies.collect, and the dashboard's re-renders of them): the layered
#: renderer, as in closed-loop episodes (the frames a monitor's SAE then reads). A one-frame
#: episode costs ~2.5× less than one TinyRenderer pass once the static layer is relit
#: (envs.relight); one pixel differs in ~2% of frames (z-fighting where the object rests on the
#: table, envs.layers), and the shipped VLMs decide the same on 256 of 256 such pairs (max
#: |ΔP(fragile)| 6e-8). Training renders keep the one-pass default above, so the shipped
#: checkpoints reproduce byte for byte.
COLLECT_RENDERER = "tiny-layered"


class FrameAt(Recorder):
    """Keeps the frame of step `step` (the state after that many actions) and ends the episode;
    an episode that ends earlier gives its last frame."""

    name = "frame"

    def __init__(self, step: int) -> None:
        self.step = step
        self.frame: np.ndarray | None = None
        self.label: dict[str, Any] | None = None

    def after_act(self, view: StepView) -> None:
        """Capture at the chosen step."""
        if view.step == self.step:
            self._keep(view)

    def after_step(self, view: StepView) -> bool:
        """End the episode once the frame is kept."""
        return self.frame is not None

    def finish(self, view: StepView) -> None:
        """The last frame, when the episode ended before the chosen step."""
        if self.frame is None:
            self._keep(view)

    def _keep(self, view: StepView) -> None:
        self.frame = view.frame()
        self.label = {**view.info["object"], "seed": view.spec.seed, "step": view.info["step"]}

    def result(self) -> tuple[np.ndarray, dict[str, Any]]:
        """(frame, label)."""
        return self.frame, self.label


class FrameAndMask(FrameAt):
    """FrameAt that also keeps the object's pixel mask in the same frame (the env's
    segmentation render from the same camera); `result()` is (frame, mask, label)."""

    def __init__(self, step: int) -> None:
        super().__init__(step)
        self.mask: np.ndarray | None = None

    def _keep(self, view: StepView) -> None:
        super()._keep(view)
        self.mask = object_mask(view.env)

    def result(self) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """(frame H × W × 3, object mask H × W bool, label)."""
        return self.frame, self.mask, self.label


def object_mask(env: Any) -> np.ndarray:
    """H × W bool: the pixels of a FrankaPickEnv's camera frame that show the object (all False
    when the scene has no object)."""
    size, obj = env.config.image_size, env.task.object_id
    seg = env.sim.render_segmentation(size, size, env.camera)
    return seg == obj if obj is not None else np.zeros(seg.shape, dtype=bool)


def render_labeled_frames(
    n: int,
    seed: int,
    image_size: int = 384,
    max_steps_into_episode: int = 60,
    first_frame_prob: float = 0.5,
    progress: Any = None,
    renderer: str = ONE_FRAME_RENDERER,
    paired: bool = False,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Render `n` frames with their labels.

    Args:
        n: number of frames (a multiple of 16 makes the design exactly balanced).
        seed: first env seed; frame i uses env seed `seed + i`.
        image_size: frame width = height.
        max_steps_into_episode: frames are taken after 0..this many expert steps.
        first_frame_prob: probability of taking the episode's first frame.
        progress: optional callable(i) called after each frame (for progress bars).
        renderer: envs.sim.RENDERERS (envs EnvConfig.renderer); the same seed gives the
            same scene and step with any renderer. The default draws in one pass: each episode
            gives one frame, so the layered renderer's static layer would never be reused (the
            same pixels, about 10% faster here).
        paired: frames 2j and 2j + 1 show one scene (env seed `seed + j`, the same step) with
            its object made fragile and rigid, everything else equal: contrast pairs (`n` even).

    Returns:
        images (n × image_size × image_size × 3 uint8) and one label dict per frame with
        color, material, shade, shape, seed and step.
    """
    from agents.protocol import ExpertAgent

    if n < 1 or (paired and n % 2):
        raise ValueError(f"n={n}: must be ≥ 1" + (", and even for paired frames" if paired else ""))
    rng = np.random.default_rng([seed, 31337])
    steps = [
        0 if rng.random() < first_frame_prob else int(rng.integers(1, max_steps_into_episode + 1))
        for _ in range(n // 2 if paired else n)
    ]
    loop = ClosedLoop(ExpertAgent("gentle"), image_size=image_size, record_decisions=False, renderer=renderer,
                      recorders=lambda spec: [FrameAt(steps[spec.seed - seed])])  # fmt: skip
    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    labels: list[dict[str, Any]] = []
    try:
        for i in range(n):
            spec = (
                EpisodeSpec(seed + i // 2, options={"material": ("fragile", "rigid")[i % 2]})
                if paired
                else EpisodeSpec(seed + i)
            )
            (record,) = loop.run([spec])
            images[i], label = record.extra["frame"]
            labels.append(label)
            if progress is not None:
                progress(i)
    finally:
        loop.close()
    return images, labels


def labeled_frame_chunks(n: int, seed: int, chunk: int = 64, workers: int = 1, image_size: int = 384,
                         renderer: str = ONE_FRAME_RENDERER,
                         paired: bool = False) -> Iterator[tuple[np.ndarray, list[dict[str, Any]]]]:  # fmt: skip
    """Labelled frames in chunks, in order: chunk k is `render_labeled_frames(chunk, seed + k·chunk)`
    (the chunk size is part of what defines the frames; paired: seed + k·chunk/2, `chunk` even). With `workers` > 1 the chunks are
    rendered ahead in that many processes (at most workers + 1 chunks in memory) while the
    caller works on the current one: the same frames, as rendering is most of a frame's cost
    and one process renders on one core.
    """
    if paired and chunk % 2:
        raise ValueError(f"chunk={chunk}: paired frames need an even chunk")
    starts = list(range(0, n, chunk))

    def job(start: int) -> tuple[int, int, int, str, bool]:
        return (
            min(chunk, n - start),
            seed + (start // 2 if paired else start),
            image_size,
            renderer,
            paired,
        )

    if workers <= 1:
        for start in starts:
            c, s, size, r, pair = job(start)
            yield render_labeled_frames(c, s, image_size=size, renderer=r, paired=pair)
        return
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for start in starts:
            pending.append(pool.submit(_render_chunk, *job(start)))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _render_chunk(
    n: int, seed: int, image_size: int, renderer: str, paired: bool
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    return render_labeled_frames(n, seed, image_size=image_size, renderer=renderer, paired=paired)
