"""Failure-prediction metrics of one scorer over scored episodes (reports.failure_metrics): only
alarms before the failure count, equal windows for the matched AUROC, and the shuffled-alarm
control that credits a scorer's timing, not its alarm rate."""

from __future__ import annotations

import pytest

from reports.failure_metrics import episode_metrics, first_alarm, shuffled_alarms


def ep(failed, steps, scores, failure_step=None):
    return {"failed": failed, "failure_step": failure_step, "steps": steps, "scores": scores}


def test_metrics_count_only_alarms_before_the_failure():
    eps = [ep(True, [0, 8, 16], [0.1, 0.9, 0.95], failure_step=12),  # caught at 8, lead 4
           ep(True, [0, 8, 16], [0.1, 0.2, 0.99], failure_step=12),  # alarm after the break: missed
           ep(False, [0, 8, 16], [0.1, 0.2, 0.3]), ep(False, [0, 8, 16], [0.1, 0.6, 0.2])]  # fmt: skip
    assert first_alarm(eps[0], 0.5) == 8 and first_alarm(eps[1], 0.5) is None
    m = episode_metrics(eps, threshold=0.5, n_boot=50)
    assert (m["caught"]["k"], m["false_alarm"]["k"], m["lead_steps"]["median"]) == (1, 1, 4.0)
    assert m["auroc"]["value"] == pytest.approx(0.5) and m["balanced_accuracy"] == pytest.approx(
        0.5
    )  # 0.9, 0.2 vs 0.3, 0.6


def test_the_matched_auroc_compares_equal_windows():
    """A scorer that rises only late in an episode (after step 20) is blind to failures that
    happen by step 12: the plain AUROC sets the failures' short windows beside the successes'
    whole episodes and reads 0 (as if it predicted success); over equal windows it reads 0.5.
    A scorer that is higher before failures reads 1 both ways."""
    late = [ep(True, [0, 8], [0.1, 0.1], failure_step=12), ep(True, [0, 8], [0.1, 0.1], failure_step=12),
            ep(False, [0, 8, 24], [0.1, 0.1, 0.9]), ep(False, [0, 8, 24], [0.1, 0.1, 0.8])]  # fmt: skip
    m = episode_metrics(late, threshold=0.5, n_boot=50)
    assert m["auroc"]["value"] == pytest.approx(0.0)
    assert m["auroc_matched"]["value"] == pytest.approx(0.5)
    assert m["auroc_matched"]["low"] <= 0.5 <= m["auroc_matched"]["high"]
    early = [ep(True, [0, 8], [0.1, 0.7], failure_step=12), ep(True, [0, 8], [0.1, 0.8], failure_step=12),
             ep(False, [0, 8, 24], [0.1, 0.2, 0.3]), ep(False, [0, 8, 24], [0.1, 0.2, 0.1])]  # fmt: skip
    assert episode_metrics(early, threshold=0.5, n_boot=50)["auroc_matched"]["value"] == 1.0


def test_the_shuffled_alarm_control_credits_timing_not_rate():
    """A scorer that alarms (at step 8) in exactly the 6 failing episodes of 24, all failing at
    step 12, catches 6; dealt to random episodes of the same kind its alarms catch 1.5 on
    average, so it beats the control. One that alarms in every episode catches every failure,
    and so does the control (p = 1): rate alone, which is what enforcing it would show."""

    def eps(alarm_in):  # alarm_in(i, failed) -> whether episode i alarms at step 8
        return [ep(i < 6, [0, 8], [0.1, 0.9 if alarm_in(i, i < 6) else 0.1], failure_step=12 if i < 6 else None)
                | {"kind": "mass"} for i in range(24)]  # fmt: skip

    informed = shuffled_alarms(eps(lambda i, failed: failed), 0.5, n_perm=400)
    assert informed["observed"] == 6 and informed["mean"] == pytest.approx(1.5, abs=0.3)
    assert informed["p_more"] < 0.01
    blanket = shuffled_alarms(eps(lambda i, failed: True), 0.5, n_perm=50)
    assert blanket["observed"] == 6 == blanket["mean"] and blanket["p_more"] == 1.0
    # dealt within a kind only: the silent episodes of another kind never take these alarms
    mixed = eps(lambda i, failed: failed)[:6] + [
        e | {"kind": "size"} for e in eps(lambda i, f: False)[6:]
    ]
    assert shuffled_alarms(mixed, 0.5, n_perm=50)["mean"] == 6
    assert (
        episode_metrics(eps(lambda i, failed: failed), 0.5, n_boot=20)["caught_shuffled"][
            "observed"
        ]
        == 6
    )
