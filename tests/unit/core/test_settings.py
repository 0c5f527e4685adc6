import re

from core.settings import ROOT, Settings


def test_feature_store_yaml_variables_are_all_settings():
    text = (ROOT / "feature_repo" / "feature_store.yaml").read_text()
    named = set(re.findall(r"\$\{(IG_[A-Z_]+)\}", text))
    fields = {f"IG_{name.upper()}" for name in Settings.model_fields}
    assert named, "feature_store.yaml should read its addresses from IG_* variables"
    assert named <= fields, f"not settings: {sorted(named - fields)}"
    assert named <= set(Settings().feast_env())


def test_settings_read_prefixed_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("IG_REDIS_PORT", "7001")
    monkeypatch.setenv("IG_DATA_DIR", str(tmp_path))
    s = Settings()
    assert s.redis_port == 7001
    assert s.offline_dir == tmp_path / "offline"
    assert s.feast_env()["IG_REDIS_PORT"] == "7001"
