import json
import shutil

import pytest

from cli.main import main
from cli.simulate import SimulationError, check_inputs
from core import names as n
from core.settings import Settings


def test_check_inputs_names_what_is_missing(tmp_path):
    s = Settings(data_dir=tmp_path / "data", artifacts_dir=tmp_path / "artifacts")
    with pytest.raises(SimulationError, match="no trained model .*make train"):
        check_inputs(s)
    (tmp_path / "artifacts" / "latest").mkdir(parents=True)
    (tmp_path / "artifacts" / "latest" / "catalogue.parquet").write_bytes(b"")
    with pytest.raises(SimulationError, match="no backfill .*make import backfill"):
        check_inputs(s)
    (tmp_path / "data" / "offline").mkdir(parents=True)
    (tmp_path / "data" / "offline" / n.BACKFILL_MANIFEST).write_text(json.dumps({}))
    assert check_inputs(s) == tmp_path / "artifacts"


def test_check_inputs_serves_the_evaluated_artifact_not_the_one_trained_on_everything(tmp_path):
    s = Settings(data_dir=tmp_path / "data", artifacts_dir=tmp_path / "artifacts")
    (tmp_path / "data" / "offline").mkdir(parents=True)
    (tmp_path / "data" / "offline" / n.BACKFILL_MANIFEST).write_text(json.dumps({}))
    for name in ("v1-evaluated", "v2-served"):
        (tmp_path / "artifacts" / name).mkdir(parents=True)
        (tmp_path / "artifacts" / name / "catalogue.parquet").write_bytes(b"")
    manifest = {"evaluation_artifact": "v1-evaluated"}
    (tmp_path / "artifacts" / "v2-served" / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "artifacts" / "latest").symlink_to("v2-served")
    folder = check_inputs(s)
    assert (folder / "latest").resolve() == (tmp_path / "artifacts" / "v1-evaluated").resolve()
    assert check_inputs(s) == folder  # again: the link is replaced, not refused
    shutil.rmtree(tmp_path / "artifacts" / "v1-evaluated")
    with pytest.raises(SimulationError, match="evaluated artifact .* is missing"):
        check_inputs(s)


def test_simulate_exits_2_with_a_message_without_a_model(tmp_path, monkeypatch, capsys):
    from core.settings import get_settings

    monkeypatch.setenv("IG_ARTIFACTS_DIR", str(tmp_path / "none"))
    get_settings.cache_clear()
    try:
        assert main(["simulate", "--rounds", "1"]) == 2
    finally:
        get_settings.cache_clear()
    assert "no trained model" in capsys.readouterr().err


def test_simulate_refuses_an_unknown_policy(capsys):
    assert main(["simulate", "--policies", "greedy,nope"]) == 2
    assert "unknown policies ['nope']" in capsys.readouterr().err
