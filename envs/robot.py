"""The Franka Panda: end-effector position control through IK, and a force-capped,
velocity-limited parallel gripper.

Why velocity-limited: a fast position-controlled finger close spikes contact force far
above the motor's force cap, which would break fragile objects regardless of the grip force
the agent asked for. Closing slowly keeps the measured squeeze near the commanded force.
"""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass

import numpy as np
import pybullet_data

from envs._pybullet import p
from envs.sim import Sim

ARM_JOINTS = (0, 1, 2, 3, 4, 5, 6)
FINGER_JOINTS = (9, 10)
EE_LINK = 11  # panda_grasptarget: between the fingertips
REST_POSE = (0.0, 0.35, 0.0, -2.2, 0.0, 2.55, 0.785)
DOWN = p.getQuaternionFromEuler((np.pi, 0.0, 0.0))
ARM_FORCES = (87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0)


@dataclass(frozen=True)
class GripperConfig:
    """Gripper limits.

    Attributes:
        max_force: squeeze force per finger (N) at gripper action 1.0.
        close_speed: finger closing speed limit (m/s).
        open_force: force used to open (N).
    """

    max_force: float = 40.0
    close_speed: float = 0.04
    open_force: float = 20.0


@functools.lru_cache(maxsize=2)
def panda_urdf(cheap_visuals: bool = True) -> str:
    """Path of the Panda URDF to load.

    With `cheap_visuals`, a copy of pybullet_data's Panda whose visual meshes are replaced by
    its (low-poly, convex) collision meshes: TinyRenderer spends ~25 ms per 384² frame on the
    detailed meshes, and the VLM needs the object's detail, not the arm's.
    """
    data = pybullet_data.getDataPath()
    original = os.path.join(data, "franka_panda", "panda.urdf")
    if not cheap_visuals:
        return original
    with open(original) as f:
        text = f.read()
    mesh_dir = os.path.join(data, "franka_panda", "meshes")
    text = text.replace("package://meshes/visual/", "package://meshes/collision/")
    text = text.replace("package://meshes/", mesh_dir + os.sep)
    out_dir = tempfile.mkdtemp(prefix="physteer_panda_")
    path = os.path.join(out_dir, "panda_cheap.urdf")
    with open(path, "w") as f:
        f.write(text)
    return path


class Panda:
    """A fixed-base Franka Panda in a `Sim`.

    Args:
        sim: the physics client wrapper.
        base_position: where the robot's base stands.
        gripper: finger force and speed limits.
        cheap_visuals: render low-poly meshes (see `panda_urdf`).
    """

    def __init__(
        self,
        sim: Sim,
        base_position: tuple[float, float, float] = (-0.6, 0.0, 0.0),
        gripper: GripperConfig = GripperConfig(),
        cheap_visuals: bool = True,
    ) -> None:
        self.sim = sim
        self.gripper = gripper
        c = sim.client
        self.body = sim.load_urdf(panda_urdf(cheap_visuals), base_position, fixed_base=True)
        for j in FINGER_JOINTS:
            p.changeDynamics(
                self.body, j, lateralFriction=1.2, spinningFriction=0.002, physicsClientId=c
            )
        # Arm links are grey; the fingertips slightly darker so the grasp reads in video.
        for link in range(-1, 12):
            sim.set_color(self.body, link, (0.85, 0.85, 0.87, 1))
        for j in FINGER_JOINTS:
            sim.set_color(self.body, j, (0.25, 0.25, 0.28, 1))
        ll = [p.getJointInfo(self.body, j, physicsClientId=c)[8] for j in ARM_JOINTS]
        ul = [p.getJointInfo(self.body, j, physicsClientId=c)[9] for j in ARM_JOINTS]
        self._limits = (ll, ul, [u - lo for lo, u in zip(ll, ul, strict=True)])
        self.reset()

    def reset(self, ee_position: np.ndarray | None = None) -> None:
        """Put the arm in its rest pose (or IK for `ee_position`) with the gripper open."""
        c = self.sim.client
        for j, q in zip(ARM_JOINTS, REST_POSE, strict=True):
            p.resetJointState(self.body, j, q, physicsClientId=c)
        if ee_position is not None:
            for _ in range(3):  # IK from the rest pose converges in a few passes
                q = self._ik(ee_position)
                for j, qj in zip(ARM_JOINTS, q, strict=True):
                    p.resetJointState(self.body, j, qj, physicsClientId=c)
        for j in FINGER_JOINTS:
            p.resetJointState(self.body, j, 0.04, physicsClientId=c)
        self.command_ee(self.ee_position())
        self.command_gripper(-1.0)

    def _ik(self, target: np.ndarray) -> list[float]:
        ll, ul, jr = self._limits
        q = p.calculateInverseKinematics(
            self.body,
            EE_LINK,
            target,
            DOWN,
            lowerLimits=ll,
            upperLimits=ul,
            jointRanges=jr,
            restPoses=list(REST_POSE),
            maxNumIterations=20,
            residualThreshold=1e-4,
            physicsClientId=self.sim.client,
        )
        return list(q[:7])

    def command_ee(self, target: np.ndarray) -> None:
        """Drive the arm joints toward the IK solution for an end-effector position."""
        q = self._ik(np.asarray(target, dtype=np.float64))
        p.setJointMotorControlArray(
            self.body,
            ARM_JOINTS,
            p.POSITION_CONTROL,
            targetPositions=q,
            forces=ARM_FORCES,
            physicsClientId=self.sim.client,
        )

    def command_gripper(self, value: float) -> None:
        """Open (value ≤ 0) or close with a force proportional to value (0, 1]."""
        c = self.sim.client
        if value <= 0:
            for j in FINGER_JOINTS:
                p.setJointMotorControl2(
                    self.body,
                    j,
                    p.POSITION_CONTROL,
                    targetPosition=0.04,
                    force=self.gripper.open_force,
                    maxVelocity=0.1,
                    physicsClientId=c,
                )
            return
        force = float(min(value, 1.0)) * self.gripper.max_force
        for j in FINGER_JOINTS:
            p.setJointMotorControl2(
                self.body,
                j,
                p.POSITION_CONTROL,
                targetPosition=0.0,
                force=force,
                maxVelocity=self.gripper.close_speed,
                physicsClientId=c,
            )

    def ee_position(self) -> np.ndarray:
        """World position of the point between the fingertips."""
        state = p.getLinkState(self.body, EE_LINK, physicsClientId=self.sim.client)
        return np.asarray(state[4], dtype=np.float64)

    def ee_state(self) -> tuple[np.ndarray, np.ndarray]:
        """World position and linear velocity of the end effector, from one query."""
        state = p.getLinkState(
            self.body, EE_LINK, computeLinkVelocity=1, physicsClientId=self.sim.client
        )
        return np.asarray(state[4], dtype=np.float64), np.asarray(state[6], dtype=np.float64)

    def finger_width(self) -> float:
        """Distance between the fingers (m)."""
        states = p.getJointStates(self.body, FINGER_JOINTS, physicsClientId=self.sim.client)
        return float(sum(state[0] for state in states))

    def finger_contacts(self, body: int) -> tuple[float, float]:
        """Total contact normal force of each finger on `body` (N)."""
        c = self.sim.client
        forces = []
        for j in FINGER_JOINTS:
            pts = p.getContactPoints(bodyA=self.body, bodyB=body, linkIndexA=j, physicsClientId=c)
            forces.append(float(sum(pt[9] for pt in pts)))
        return forces[0], forces[1]
