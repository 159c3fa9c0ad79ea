"""A state directory moved or copied: commands refuse with the fix instead of writing into the old folder, and
``adaptrail relocate`` points the recorded paths at the new one."""

import shutil

import mlflow
import pytest

from tasks.core import relocation
from tasks.core.errors import InputError
from tasks.governance import registry


def _run_with_artifact(tmp_path) -> tuple[str, str]:
    c = registry.client()
    run_id = registry.start_run(c, "adaptrail", "train", {})
    note = tmp_path / "note.txt"
    note.write_text("evidence\n")
    c.log_artifact(run_id, str(note), "reports")
    registry.end_run(c, run_id, True)
    return run_id, c.get_run(run_id).info.artifact_uri


def test_a_copied_state_is_refused_then_relocated(home, tmp_path, monkeypatch, cli, capsys):
    run_id, uri = _run_with_artifact(tmp_path)
    assert uri.startswith(relocation.here() + "/") and relocation.moved_from() is None
    copy = tmp_path / "copied"
    shutil.copytree(home, copy)
    monkeypatch.setenv("ADAPTRAIL_HOME", str(copy))
    assert relocation.moved_from() == (home / "mlartifacts").as_uri()
    with pytest.raises(InputError, match="was moved or copied.*adaptrail relocate"):
        relocation.require_in_place()
    assert cli(["list"]) == 2  # refused before reading anything
    assert "adaptrail relocate" in capsys.readouterr().err

    assert cli(["relocate"]) == 0
    assert "relocated" in capsys.readouterr().out
    assert relocation.moved_from() is None
    moved_uri = registry.client().get_run(run_id).info.artifact_uri
    assert moved_uri == uri.replace(home.as_uri(), copy.as_uri())
    shutil.rmtree(home)  # the original is gone: the copy still reads its own artifacts, and new runs write there
    local = mlflow.artifacts.download_artifacts(artifact_uri=f"{moved_uri}/reports/note.txt", dst_path=str(tmp_path / "d"))
    assert open(local).read() == "evidence\n"
    _, new_uri = _run_with_artifact(tmp_path)
    assert new_uri.startswith((copy / "mlartifacts").as_uri())
    with pytest.raises(InputError, match="nothing to relocate"):
        relocation.relocate()


def test_a_moved_state_without_its_artifacts_is_not_relocated(home, tmp_path, monkeypatch):
    _run_with_artifact(tmp_path)
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(home / "mlflow.db", moved / "mlflow.db")  # the database alone
    monkeypatch.setenv("ADAPTRAIL_HOME", str(moved))
    with pytest.raises(InputError, match="mlartifacts is missing"):
        relocation.relocate()
    assert relocation.moved_from() is not None  # nothing was rewritten
