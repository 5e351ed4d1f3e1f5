"""The registry: unknown names, data a method needs, and a user's own method file, from fitting
through a `method:` condition in a run, with clear errors before any work."""

from __future__ import annotations

import textwrap

import pytest
import torch

from steering import load_method_files, make_method
from steering.base import FitData

USER_METHOD = textwrap.dedent('''
    import torch
    from steering import register_method
    from steering.direction import DirectionMethod

    @register_method
    class FirstDimension(DirectionMethod):
        """Steer along the first residual dimension (a user's toy method)."""

        name = "first-dim"
        paper = "a user's own"

        def _direction(self, data):
            d = torch.zeros(data.acts[data.layer].shape[1])
            d[0] = 1.0
            return d
''')


def test_unknown_method_lists_the_known():
    with pytest.raises(
        ValueError, match=r"steering method 'nope': expected one of \[.*'selective'"
    ):
        make_method("nope")


def test_missing_data_named_before_fitting(fit_data, vla_backend):
    with pytest.raises(
        ValueError, match="steering method 'sae' needs sae data, which this run lacks"
    ):
        make_method("sae").fit(fit_data)
    bare = FitData(fit_data.acts, fit_data.material, fit_data.color, fit_data.group, layer=2)
    with pytest.raises(ValueError, match="'steer2edit' needs frames data"):
        make_method("steer2edit").fit(bare, vla_backend)
    with pytest.raises(ValueError, match="reads the model to fit: pass the backend"):
        make_method("neuron").fit(fit_data)


def test_fit_data_shape_errors(fit_data):
    with pytest.raises(ValueError, match=r"layer=9: the data has layers \[0, 1, 2, 3\]"):
        FitData(fit_data.acts, fit_data.material, fit_data.color, fit_data.group, layer=9)
    with pytest.raises(ValueError, match="one row per material label"):
        FitData(
            {2: fit_data.acts[2][:5]}, fit_data.material, fit_data.color, fit_data.group, layer=2
        )
    only = fit_data.material.copy()
    only[:] = "fragile"
    with pytest.raises(ValueError, match="needs rows of both 'fragile' and 'rigid'"):
        FitData(fit_data.acts, only, fit_data.color, fit_data.group, layer=2)


def test_bad_user_files(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('my bug')\n")
    with pytest.raises(
        ValueError, match=r"method file '.*broken.py' failed to import: RuntimeError: my bug"
    ):
        load_method_files([str(broken)])
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(ValueError, match="registers no method"):
        load_method_files([str(empty)])
    with pytest.raises(ValueError, match="expected an existing .py file"):
        load_method_files([str(tmp_path / "missing.py")])


def test_user_method_and_old_conditions_in_one_run(tmp_path, fit_data, vla_backend):
    """A user's method steers through `method:` conditions in a run; strength 0 gives the
    unsteered episode exactly; `dom:-1` and `method:dom:-1` (the same vector) give one episode."""
    import pyarrow.parquet as pq
    from safetensors.torch import save_file

    from rollouts.experiment import run_experiment
    from rollouts.experiment_config import ExperimentConfig
    from steering.methods.dom import DiffMean

    user = tmp_path / "mine.py"
    user.write_text(USER_METHOD)
    load_method_files([str(user)])
    methods = tmp_path / "methods"
    make_method("first-dim").fit(fit_data).save(methods / "first-dim")
    DiffMean.from_vector(fit_data.dom(), layer=2).save(methods / "dom")
    save_file({"dom": fit_data.dom().contiguous()}, str(tmp_path / "vector.safetensors"))
    conditions = ["unsteered", "method:dom:0", "dom:-1", "method:dom:-1", "method:first-dim:-2"]
    cfg = ExperimentConfig(name="run", out=str(tmp_path), conditions=conditions, seeds=[0], material="fragile",
                           agent="vla", layer=2, max_steps=40, holding=False, executor="serial",
                           vector=str(tmp_path / "vector.safetensors"), methods=str(methods),
                           method_files=[str(user)])  # fmt: skip
    run = run_experiment(cfg, progress=False)
    steps = pq.read_table(run / "steps.parquet").to_pylist()

    def plain(v):  # NaN (no decision at this step) compares equal to NaN here
        return None if isinstance(v, float) and v != v else v

    by = {c: [{k: plain(v) for k, v in s.items() if k != "condition"} for s in steps if s["condition"] == c]
          for c in conditions}  # fmt: skip
    assert by["method:dom:0"] == by["unsteered"]
    assert by["method:dom:-1"] == by["dom:-1"]
    assert by["method:first-dim:-2"] != by["unsteered"]


def test_method_conditions_checked_before_any_episode(tmp_path, fit_data):
    from rollouts.experiment import run_experiment
    from rollouts.experiment_config import ExperimentConfig

    make_method("ablation").fit(fit_data).save(tmp_path / "methods" / "ablation")
    for condition, message in (("method:ablation:3", r"strength 3.0 of steering method 'ablation': allowed \[0, 1\]"),
                               ("method:dom:1", r"steering method 'dom' is not fitted in this run's methods folder; "
                                                r"it has \['ablation'\]")):  # fmt: skip
        cfg = ExperimentConfig(name="bad", out=str(tmp_path), conditions=[condition], seeds=[0], agent="vla",
                               executor="serial", methods=str(tmp_path / "methods"))  # fmt: skip
        with pytest.raises(ValueError, match=message):
            run_experiment(cfg, progress=False)
        assert not (tmp_path / "bad").exists()


def test_a_method_from_another_distribution(tmp_path, monkeypatch, fit_data):
    """A package that declares a method in the `physteer.steering` entry-point group: found by
    name, fitted, saved and loaded like a built-in, with no edit of physteer."""
    from steering import load_method, method_names

    (tmp_path / "lastdim_pkg.py").write_text(
        USER_METHOD.replace("first-dim", "last-dim").replace("d[0]", "d[-1]")
    )
    dist = tmp_path / "lastdim_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lastdim-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[physteer.steering]\nlast-dim = lastdim_pkg:FirstDimension\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "last-dim" in method_names()
    method = make_method("last-dim").fit(fit_data)
    assert (
        float(method.state["vector"][-1]) != 0
        and float(method.state["vector"][:-1].abs().sum()) == 0
    )
    again = load_method(method.save(tmp_path / "saved"))
    assert torch.equal(again.state["vector"], method.state["vector"])


def test_a_user_method_cannot_take_a_builtin_name():
    from steering import SteeringMethod, register_method

    class Impostor(SteeringMethod):
        name = "dom"

    with pytest.raises(
        ValueError, match="steering method 'dom' is taken by steering.methods.dom:DiffMean"
    ):
        register_method(Impostor)
