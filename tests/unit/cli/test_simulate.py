import json

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
