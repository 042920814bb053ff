"""Atomic writes, locks and stage records."""
import json
import os

import pytest

from metacog.core.settings import ModelSettings, StudySettings, stable_hash
from metacog.core.workspace import Workspace, WorkspaceBusy, atomic_write_json


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    p = tmp_path / "x.json"
    atomic_write_json(p, {"a": 1})

    class Boom:
        pass

    with pytest.raises(TypeError):
        atomic_write_json(p, {"a": Boom()})
    assert json.loads(p.read_text()) == {"a": 1}
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []


def test_lock_refuses_second_launch(tmp_path):
    ws = Workspace(tmp_path)
    with ws.lock("study"):
        with pytest.raises(WorkspaceBusy, match="already running"):
            with Workspace(tmp_path).lock("study"):
                pass
    with ws.lock("study"):  # released afterwards
        pass


def test_settings_roundtrip_and_stage_keys(tmp_path):
    ws = Workspace(tmp_path).init(ModelSettings(threads=1), StudySettings(limit=50, seed=3))
    m, s = ws.settings()
    assert m.threads == 1 and s.limit == 50 and s.seed == 3 and s.split_fractions == (0.6, 0.2, 0.2)
    k = stable_hash(s)
    assert k == stable_hash(StudySettings(limit=50, seed=3)) != stable_hash(StudySettings(limit=50, seed=4))
    ws.mark_stage("answers", k)
    assert ws.stage_fresh("answers", k) and not ws.stage_fresh("answers", "other")


@pytest.mark.parametrize("kw", [dict(limit=0), dict(split_fractions=(0.5, 0.5, 0.5)), dict(batch_size=0), dict(probe_folds=1)])
def test_absurd_study_settings(kw):
    with pytest.raises(ValueError):
        StudySettings(**kw)


def test_is_locked_reports_holder(tmp_path):
    ws = Workspace(tmp_path)
    assert ws.is_locked() is None
    with ws.lock("study"):
        assert "pid" in Workspace(tmp_path).is_locked()
    assert ws.is_locked() is None


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    from metacog.core.workspace import cache_dir

    monkeypatch.setenv("METACOG_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path.resolve()
