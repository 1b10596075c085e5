"""`inspect` reads a run directory without loading torch, whichever config layout saved it."""
from __future__ import annotations


def test_inspect_reads_a_sectioned_config_and_an_older_flat_one(tmp_path):
    from launch.inspect import inspect_run
    new = "model: {path: /m, source: org/x@abc}\nattack: ship\nrsft: {enabled: false}\nseed: 3\n"
    old = "model: /m\nmodel_source: org/x@abc\nattack: ship\nrsft: false\nseed: 3\n"
    for layout, text in [("new", new), ("old", old)]:
        run = tmp_path / layout
        run.mkdir()
        (run / "config.yaml").write_text(text)
        assert "model: Hub org/x@abc at /m  attack: ship  rsft: False  seed: 3" in inspect_run(run)
