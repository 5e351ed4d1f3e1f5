"""Where a demo run keeps each stage's output: the marker file that says a stage is done
(written last, atomically; `storage.marker_reads` tests it), shared by the stages and the report."""

#: The VLA stage's three parts and their markers.
VLA_MARKERS = {"closed loop": "vla/closed_loop.json", "steering": "vla/study/summary.json",
               "sarm": "vla/sarm/summary.json"}  # fmt: skip

#: The file that marks each stage done (relative to the demo folder), written last.
STAGE_MARKERS = {
    "1. collect activations": "store/dom_vector.safetensors",
    "2. train SAE": "sae/sae/config.json",
    "3. discover fragility features": "discovery/discovery.json",
    "3b. discovery control: random-weight model": "control/control.json",
    "5. SARM monitor under perturbations": "sarm/summary.json",
    "6. world-model probe": "probe/probe.json",
    **{f"7. VLA: {part}": rel for part, rel in VLA_MARKERS.items()},
}  # fmt: skip
