"""Steering methods: one per file behind one base class (steering.base.SteeringMethod), fitted
on labelled activations, applied to a model at a strength as hooks or weight edits, undone
bit-exactly; their registry (built-ins, the "physteer.steering" entry points, a user's own
files). `method:<name>:<strength>` conditions run them; `physteer steer-bench` compares them.

Of physteer it imports storage, sae and agents (the hooks and interventions it builds on);
rollouts, studies and the CLI import it.

    from steering import FitData, make_method, register_method, SteeringMethod
"""

from steering.base import FitData, SteeringMethod
from steering.registry import (
    load_method,
    load_method_files,
    make_method,
    method_class,
    method_names,
    register_method,
)

__all__ = [
    "FitData", "SteeringMethod", "load_method", "load_method_files", "make_method", "method_class",
    "method_names", "register_method",
]  # fmt: skip
