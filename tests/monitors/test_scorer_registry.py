"""Scorer kinds: built-ins by name, others through the `physteer.scorers` entry-point group (a
real distribution's metadata on sys.path), with no edit of physteer; unknown kinds are named."""

from __future__ import annotations

import textwrap

import pytest
import torch

from monitors.scorers import BUILTIN_SCORERS, load_scorer, make_scorer, scorer_kinds


def test_builtin_kinds_load_by_name():
    assert set(BUILTIN_SCORERS) <= set(scorer_kinds())
    for kind in ("mahalanobis", "pca"):
        assert make_scorer(kind).kind == kind


def test_unknown_kind_is_named():
    with pytest.raises(ValueError, match="scorer kind 'laser'"):
        make_scorer("laser")


def test_a_scorer_from_another_distribution(tmp_path, monkeypatch):
    """A package that declares a scorer as an entry point: make_scorer finds it, it fits,
    scores, saves and loads like a built-in."""
    (tmp_path / "norm_scorer_pkg.py").write_text(
        textwrap.dedent("""
        import torch
        from monitors.scorers import Scorer, register_scorer

        @register_scorer
        class NormScorer(Scorer):
            kind = "norm"

            def _fit(self, x):
                self.scale = x.norm(dim=1).mean()

            def _token_scores(self, x):
                return x.norm(dim=1) / self.scale

            def _tensors(self):
                return {"scale": self.scale}

            def _restore(self, tensors, directory):
                self.scale = tensors["scale"]
    """)
    )
    dist = tmp_path / "norm_scorer_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: norm-scorer-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[physteer.scorers]\nnorm = norm_scorer_pkg:NormScorer\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "norm" in scorer_kinds()
    clean = torch.randn(200, 8)
    scorer = make_scorer("norm", model="m", layer=1).fit([clean])
    assert scorer.score(clean[:10] * 3) > scorer.score(clean[:10])
    scorer.calibrate(
        scorer.score_many([clean[i : i + 10] for i in range(0, 200, 10)]), method="sigma", k=2
    )
    again = load_scorer(scorer.save(tmp_path / "saved"), model="m", layer=1)
    assert again.kind == "norm" and again.threshold == pytest.approx(scorer.threshold)
