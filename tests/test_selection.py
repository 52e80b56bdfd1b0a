"""engine/selection.py: model_selected.pth is the best-scoring model, the start included, the
record survives a resume, and a score below the start is said."""
import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from calr_plugin.engine import selection
from calr_plugin.engine.selection import Selector


def cfg(out, signal="probe"):
    return SimpleNamespace(OUTPUT_DIR=str(out), CALR=SimpleNamespace(SELECT=SimpleNamespace(SIGNAL=signal)))


@pytest.fixture(autouse=True)
def probe_signal(monkeypatch):
    # A signal that reads its score from the features, so a test sets each epoch's score.
    monkeypatch.setitem(selection.SIGNALS, "probe", lambda feats, cams, rows, groups=None: float(feats[0, 0]))


def epoch(selector, model, trained, score):
    with torch.no_grad():
        model.weight.fill_(trained)  # the weights say which epoch they are
    return selector(model, np.full((4, 2), score, np.float32), trained)


def saved(out):
    return torch.load(out / "model_selected.pth", weights_only=False)


def test_the_best_scoring_epoch_is_kept_and_the_record_says_so(tmp_path):
    model, sel = torch.nn.Linear(2, 2), Selector(cfg(tmp_path), np.array([0, 0, 1, 1]))
    for trained, score in enumerate([0.30, 0.35, 0.50, 0.42]):
        assert epoch(sel, model, trained, score) == {"signal/probe": pytest.approx(score)}
    ckpt = saved(tmp_path)
    assert ckpt["selection"] == {"epoch": 2, "score": pytest.approx(0.5)}
    assert torch.all(ckpt["model"]["weight"] == 2)  # the weights of epoch 2, not the last ones
    rec = json.loads((tmp_path / "selection.json").read_text())
    assert rec["start"] == pytest.approx(0.30) and list(rec["history"]) == ["0", "1", "2", "3"]
    assert "after 2 stage-2 epoch(s)" in sel.summary()


def test_when_no_epoch_beats_the_untrained_start_the_start_is_recommended_with_a_warning(tmp_path, caplog):
    model, sel = torch.nn.Linear(2, 2), Selector(cfg(tmp_path), np.array([0, 1]))
    with caplog.at_level(logging.WARNING, logger="fastreid"):
        for trained, score in enumerate([0.40, 0.45, 0.30]):
            epoch(sel, model, trained, score)
    assert len([r for r in caplog.records if "below the untrained start" in r.getMessage()]) == 1
    for trained, score in [(3, 0.2), (4, 0.1)]:
        epoch(sel, model, trained, score)
    assert saved(tmp_path)["selection"]["epoch"] == 1
    sel2 = Selector(cfg(tmp_path / "b"), np.array([0, 1]))
    for trained, score in enumerate([0.40, 0.40, 0.30]):  # a tie keeps the earlier model
        epoch(sel2, model, trained, score)
    assert torch.all(saved(tmp_path / "b")["model"]["weight"] == 0)
    assert "the untrained start: no epoch scored above it" in sel2.summary()
    assert "without DATASETS.TRACKLETS folder this signal kept the start" in sel2.summary()


def test_with_tracklets_the_signal_reads_them_and_a_kept_start_carries_no_video_caveat(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setitem(selection.SIGNALS, "probe", lambda feats, cams, rows, groups=None:
                        seen.append(groups) or float(feats[0, 0]))
    groups = np.array([0, 0, 1, 1])
    sel = Selector(cfg(tmp_path), np.array([0, 0, 1, 1]), groups=groups)
    for trained, score in enumerate([0.40, 0.40]):
        epoch(sel, torch.nn.Linear(2, 2), trained, score)
    assert all(g is groups for g in seen) and len(seen) == 2
    assert "the untrained start" in sel.summary() and "TRACKLETS" not in sel.summary()


def test_a_resumed_run_continues_the_record_and_a_fresh_one_restarts_it(tmp_path):
    model = torch.nn.Linear(2, 2)
    first = Selector(cfg(tmp_path), np.array([0, 1]))
    for trained, score in enumerate([0.30, 0.60, 0.40]):
        epoch(first, model, trained, score)
    # A kill after the checkpoint of a better epoch 3 but before its record was written.
    torch.save({"model": model.state_dict(), "selection": {"epoch": 3, "score": 0.7}}, tmp_path / "model_selected.pth")
    resumed = Selector(cfg(tmp_path), np.array([0, 1]))
    epoch(resumed, model, 4, 0.65)  # below the checkpoint's 0.7: it must not replace it
    assert saved(tmp_path)["selection"] == {"epoch": 3, "score": 0.7}
    rec = json.loads((tmp_path / "selection.json").read_text())
    assert rec["start"] == pytest.approx(0.30) and set(rec["history"]) == {"0", "1", "2", "4"}
    fresh = Selector(cfg(tmp_path), np.array([0, 1]))
    epoch(fresh, model, 0, 0.1)  # a new run into the same folder starts over
    assert saved(tmp_path)["selection"]["epoch"] == 0
    assert json.loads((tmp_path / "selection.json").read_text())["history"] == {"0": pytest.approx(0.1)}


def test_a_share_must_beat_the_start_by_its_noise_to_replace_it(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(selection, "SHARES", ("probe",))
    held = np.zeros(200, bool)
    held[:50] = True  # 50 scored images: a share moves in steps of 0.02
    model, sel = torch.nn.Linear(2, 2), Selector(cfg(tmp_path), np.repeat([0, 1], 100), held)
    margin = 2 * np.sqrt(2 * 0.3 * 0.7 / 50)  # 0.183
    with caplog.at_level(logging.WARNING, logger="fastreid"):
        for trained, score in enumerate([0.30, 0.40, 0.20, 0.10]):
            epoch(sel, model, trained, score)
    assert saved(tmp_path)["selection"]["epoch"] == 0  # 0.40 is within the noise of 0.30
    warned = [r.getMessage() for r in caplog.records if "below the untrained start" in r.getMessage()]
    assert len(warned) == 1 and "after 3 stage-2 epoch(s)" in warned[0]  # 0.20 is within the noise too
    for trained, score in [(4, 0.50), (5, 0.45)]:
        epoch(sel, model, trained, score)
    assert saved(tmp_path)["selection"]["epoch"] == 4
    assert json.loads((tmp_path / "selection.json").read_text())["margin"] == pytest.approx(margin)


def test_a_run_begun_before_selection_existed_resumes_without_a_start(tmp_path):
    model, sel = torch.nn.Linear(2, 2), Selector(cfg(tmp_path), np.array([0, 1]))
    for trained, score in [(3, 0.3), (4, 0.5), (5, 0.4)]:  # no record, no epoch 0: resumed at 3
        epoch(sel, model, trained, score)
    assert saved(tmp_path)["selection"]["epoch"] == 4
    assert "the start not scored" in sel.summary()
