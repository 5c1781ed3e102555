"""`firepath master` argument checks that need no running process."""

from __future__ import annotations

from pathlib import Path

from controller.cli import main
from tests.harness.loopcluster import write_cluster_config


def test_single_election_refused_with_several_masters(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """Every replica would make itself master of the same term: refused before anything starts."""
    cfg = write_cluster_config(tmp_path, masters=3)
    assert main(["master", "--config", str(cfg), "--id", "m1", "--election", "single",
                 "--state-dir", str(tmp_path / "state")]) == 2
    assert "--election single needs a config with one master" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()


def test_unknown_master_id(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    cfg = write_cluster_config(tmp_path, masters=1)
    assert main(["master", "--config", str(cfg), "--id", "m9"]) == 2
    assert "no master with id 'm9'" in capsys.readouterr().err
