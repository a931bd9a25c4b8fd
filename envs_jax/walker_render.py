"""Pictures of ``Walker-v0``: one frame per state (PIL, host side), the camera following the hull.

``frame(env, state)`` draws the terrain near the walker, the hull and both legs;
``film(env, params, states, done)`` turns an episode's states (``jaxmeta.evolution.rollouts
.episode_states``) into frames, holding the last frame once the episode has ended.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

WIDTH, HEIGHT, PIXELS_PER_METRE = 320, 150, 28.0


def frame(env: Any, state: Any, label: str = "", width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """An RGB picture ``[height, width, 3]`` of one walker state, the hull a third from the left."""
    from PIL import Image, ImageDraw

    points = {k: np.asarray(v) for k, v in env.render_points(state).items()}
    pose = np.asarray(state.pose)
    left = pose[0] - width / PIXELS_PER_METRE / 3
    base = pose[1] - height / PIXELS_PER_METRE * 0.55  # the hull a little above the middle

    def pixel(x: float, y: float) -> tuple[float, float]:
        return (x - left) * PIXELS_PER_METRE, height - (y - base) * PIXELS_PER_METRE

    image = Image.new("RGB", (width, height), (235, 242, 250))
    draw = ImageDraw.Draw(image)
    heights = np.asarray(state.heights)
    xs = np.arange(heights.shape[0]) * env.cell
    seen = (xs >= left - 1) & (xs <= left + width / PIXELS_PER_METRE + 1)
    ground = [pixel(x, max(h, base - 1.0)) for x, h in zip(xs[seen], heights[seen], strict=True)]
    if len(ground) > 1:
        draw.polygon([*ground, (ground[-1][0], height), (ground[0][0], height)], fill=(120, 160, 90))
        draw.line(ground, fill=(60, 100, 40), width=2)
    finish = pixel(env.course_length, 0.0)[0]
    draw.line([(finish, 0), (finish, height)], fill=(200, 40, 40), width=1)
    hull = [pixel(*c) for c in points["hull"][[0, 1, 3, 2]]]
    draw.polygon(hull, fill=(130, 90, 200), outline=(60, 30, 110))
    hip = pixel(*points["hip"])
    for leg, colour in ((0, (90, 60, 160)), (1, (170, 140, 230))):
        knee, foot = pixel(*points["knees"][leg]), pixel(*points["feet"][leg])
        draw.line([hip, knee, foot], fill=colour, width=4)
    draw.text((4, 4), f"x = {pose[0]:5.1f} m  {label}", fill="black")
    return np.asarray(image)


def film(env: Any, states: Any, done: Any, label: str = "", every: int = 2) -> list[np.ndarray]:
    """Frames of every ``every``-th state until the episode ends (``done [T]`` after each step)."""
    done = np.asarray(done)
    last = int(np.argmax(done)) + 1 if done.any() else done.shape[0]
    return [frame(env, jax.tree.map(lambda x, t=t: x[t], states), label) for t in range(0, last + 1, every)]


def stack(films: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Films one above the other, each holding its last frame until the longest ends."""
    length = max(len(f) for f in films)
    return [np.concatenate([f[min(t, len(f) - 1)] for f in films], axis=0) for t in range(length)]


__all__ = ["film", "frame", "stack"]
