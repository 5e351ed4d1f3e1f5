"""Fragility physics: smooth contact normal forces and decide when a fragile object breaks.

Raw PyBullet contact forces are single-substep impulses divided by dt, so one noisy substep
can read several times the true load. An exponential moving average over substeps (time
constant `tau`) turns them into a force an object would plausibly "feel". Grip (finger)
force and impact (everything else) are tracked separately so the cause can be reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FragilityConfig:
    """Breaking threshold and smoothing.

    Attributes:
        threshold: smoothed normal force (N) above which a fragile object breaks.
        tau: smoothing time constant (s).
    """

    threshold: float = 15.0
    tau: float = 0.01


@dataclass
class ForceTracker:
    """Tracks smoothed grip and impact forces on one object over an episode."""

    config: FragilityConfig
    dt: float
    grip: float = 0.0
    impact: float = 0.0
    peak: float = 0.0
    peak_grip: float = 0.0
    peak_impact: float = 0.0
    history: list[float] = field(default_factory=list)

    @property
    def alpha(self) -> float:
        """EMA weight of one substep."""
        return min(1.0, self.dt / self.config.tau)

    def update(self, grip_force: float, impact_force: float) -> str | None:
        """Feed one substep's raw forces; return the break cause ("grip"/"impact") or None."""
        a = self.alpha
        self.grip += a * (grip_force - self.grip)
        self.impact += a * (impact_force - self.impact)
        self.peak_grip = max(self.peak_grip, self.grip)
        self.peak_impact = max(self.peak_impact, self.impact)
        self.peak = max(self.peak_grip, self.peak_impact)
        if self.grip > self.config.threshold:
            return "grip"
        if self.impact > self.config.threshold:
            return "impact"
        return None
