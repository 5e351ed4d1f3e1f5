"""The specificity comparison: steered conditions against the controls of their family."""

from reports.steering import specificity, specificity_markdown


def _rows(conditions, steps_shift):
    return [dict(condition=c, seed=s, success=True, broken=False, peak_force=1.0,
                 steps=10 + s + steps_shift.get(c, 0), p_fragile_mean=0.1)
            for c in conditions for s in range(6)]  # fmt: skip


def test_each_steering_is_compared_with_the_controls_of_its_family():
    conditions = [
        "unsteered",
        "sae:fragility:+1",
        "dom:+2",
        "random:+1",
        "neuron:fragile:5",
        "neuron-random:5",
    ]
    spec = specificity(_rows(conditions, {"sae:fragility:+1": 7, "random:+1": 2}), "unsteered")
    assert {k: [r["condition"] for r in v] for k, v in spec.items()} == {
        "random:+1": ["sae:fragility:+1", "dom:+2"],
        "neuron-random:5": ["neuron:fragile:5"],
    }
    (sae_vs_random,) = [r for r in spec["random:+1"] if r["condition"] == "sae:fragility:+1"]
    assert sae_vs_random["n_paired"] == 6
    assert sae_vs_random["steps_diff"]["value"] == 5  # steered (+7) minus the control (+2)
    md = specificity_markdown(spec)
    assert "| sae:fragility:+1 | random:+1 | 6 |" in md and "neuron-random:5" in md


def test_no_control_no_table():
    spec = specificity(_rows(["unsteered", "dom:+2"], {}), "unsteered")
    assert spec == {} and specificity_markdown(spec) == ""
