"""The relit static layer (envs.relight) is TinyRenderer's own draw, bit for bit, under any light;
a layer the formula cannot follow is refused, and the layered renderer then draws it."""

from __future__ import annotations

import math

import numpy as np

from envs import FrankaPickEnv
from envs._pybullet import p
from envs.layers import LayeredRenderer
from envs.relight import StaticRelighter


def _random_lights(n: int, seed: int) -> list[dict]:
    """Lights of every kind: any direction (below the table too), not unit length, any mix."""
    rng = np.random.default_rng(seed)
    lights = []
    for _ in range(n):
        az, el = rng.uniform(0, 2 * math.pi), rng.uniform(-1.5, 1.5)
        scale = rng.uniform(0.2, 5.0)
        direction = tuple(
            scale
            * np.array([math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el)])
        )
        ka, kd, ks = rng.uniform([0.0, 0.0, 0.0], [1.0, 1.0, 0.5])
        lights.append({"lightDirection": direction, "lightAmbientCoeff": float(ka),
                       "lightDiffuseCoeff": float(kd), "lightSpecularCoeff": float(ks)})  # fmt: skip
    return lights


def test_the_relit_table_and_bin_equal_tinyrenderer_under_any_light():
    env = FrankaPickEnv(
        render_mode="rgb_array", obs_mode="state", image_size=96, renderer="tiny-layered"
    )
    try:
        env.reset(seed=0)
        env.render()
        sim = env.unwrapped.sim
        layers: LayeredRenderer = sim._layers
        view, proj = sim._matrices(96, 96, env.unwrapped.camera)

        def draw(light):
            return layers._draw(layers.static_client, 96, 96, view, proj, light)

        relighter = StaticRelighter.build(draw)
        assert relighter is not None
        for k, light in enumerate(_random_lights(12, seed=1)):
            drawn, depth = draw(light)
            relit = relighter.shade(light)
            assert np.array_equal(relit, drawn), (k, int((relit != drawn).sum()))
            assert np.array_equal(relighter.depth, depth)
        # the comparison can fail: two lights give different layers
        a, b = _random_lights(2, seed=2)
        assert not np.array_equal(relighter.shade(a), relighter.shade(b))
    finally:
        env.close()


def _box_client(orientation: tuple[float, ...]) -> tuple[int, list, list]:
    """A client with one static box (and sky around it in view); its camera matrices."""
    client = p.connect(p.DIRECT)
    vis = p.createVisualShape(
        p.GEOM_BOX,
        halfExtents=[0.2, 0.2, 0.2],
        rgbaColor=[0.8, 0.3, 0.2, 1],
        physicsClientId=client,
    )
    p.createMultiBody(0, -1, vis, [0, 0, 0], orientation, physicsClientId=client)
    view = p.computeViewMatrix([1.2, 0.7, 0.9], [0, 0, 0], [0, 0, 1], physicsClientId=client)
    proj = p.computeProjectionMatrixFOV(40, 1.0, 0.05, 5.0, physicsClientId=client)
    return client, view, proj


def _draw_in(client: int, view: list, proj: list):
    return lambda light: LayeredRenderer._draw(client, 64, 64, view, proj, light)


def test_sky_pixels_are_kept_and_a_tilted_box_is_refused():
    client, view, proj = _box_client((0, 0, 0, 1))
    try:
        draw = _draw_in(client, view, proj)
        relighter = StaticRelighter.build(draw)
        assert relighter is not None  # three faces and the sky around them
        for light in _random_lights(6, seed=3):
            assert np.array_equal(relighter.shade(light), draw(light)[0])
    finally:
        p.disconnect(client)
    client, view, proj = _box_client(p.getQuaternionFromEuler([0.5, 0.3, 0.0]))
    try:
        assert StaticRelighter.build(_draw_in(client, view, proj)) is None  # normals off the axes
    finally:
        p.disconnect(client)


def test_episodes_after_the_first_are_relit_and_equal_one_pass():
    envs = {r: FrankaPickEnv(render_mode="rgb_array", obs_mode="state", image_size=64, renderer=r)
            for r in ("tiny", "tiny-layered")}  # fmt: skip
    try:
        for seed in (11, 12, 13):
            for env in envs.values():
                env.reset(seed=seed)
            assert np.array_equal(envs["tiny"].render(), envs["tiny-layered"].render()), seed
        # episodes 2 and 3 at least (the first too where this process drew the view before)
        assert envs["tiny-layered"].unwrapped.sim._layers.relit_layers >= 2
    finally:
        for env in envs.values():
            env.close()
