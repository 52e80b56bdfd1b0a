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
    # A signal whose per-image values are the scored images' first feature, so a test sets them.
    monkeypatch.setitem(selection.SIGNALS, "probe", lambda feats, cams, rows, groups=None:
                        feats[slice(None) if rows is None else rows, 0])


def epoch(selector, model, trained, score):
    with torch.no_grad():
        model.weight.fill_(trained)  # the weights say which epoch they are
    return selector(model, np.full((len(selector.cams), 2), score, np.float32), trained)


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
    assert "the untrained start: no epoch's gain over it was above 2 standard errors over 2 images" in sel2.summary()
    assert "without DATASETS.TRACKLETS folder this signal kept the start" in sel2.summary()


def test_with_tracklets_the_signal_reads_them_and_a_kept_start_says_few_tracklets_show_only_large_gains(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setitem(selection.SIGNALS, "probe", lambda feats, cams, rows, groups=None:
                        seen.append(groups) or feats[:, 0])
    groups = np.array([0, 0, 1, 1])
    sel = Selector(cfg(tmp_path), np.array([0, 0, 1, 1]), groups=groups)
    for trained, score in enumerate([0.40, 0.40]):
        epoch(sel, torch.nn.Linear(2, 2), trained, score)
    assert all(g is groups for g in seen) and len(seen) == 2
    assert "the untrained start" in sel.summary() and "only a large gain shows" in sel.summary()
    assert "without DATASETS.TRACKLETS" not in sel.summary()


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


def scored(values, held):
    feats = np.zeros((len(held), 2), np.float32)
    feats[held, 0] = values
    return feats


def test_a_gain_must_beat_its_noise_counted_over_held_out_tracklets(tmp_path, caplog):
    """50 held-out images in 5 tracklets of 10. A gain that one tracklet carries is one unit's
    luck (10 images flipping together); the same gain spread over all five is not."""
    held = np.zeros(200, bool)
    held[:50] = True
    groups = np.concatenate([np.repeat(np.arange(5), 10), 5 + np.arange(150) // 10])
    cams = np.tile([0, 1], 100)
    one_tracklet = np.r_[np.ones(10), np.zeros(40)]  # +0.2, z = 1 over 5 tracklets
    spread = np.zeros(50)
    for t, k in enumerate([2, 2, 2, 3, 1]):  # +0.2 again, from every tracklet
        spread[10 * t:10 * t + k] = 1
    model = torch.nn.Linear(2, 2)
    sel = Selector(cfg(tmp_path), cams, held, groups=groups)
    with caplog.at_level(logging.WARNING, logger="fastreid"):
        for trained, values in enumerate([np.zeros(50), one_tracklet, -one_tracklet]):
            with torch.no_grad():
                model.weight.fill_(trained)
            sel(model, scored(values, held), trained)
    assert saved(tmp_path)["selection"]["epoch"] == 0  # an image-level test (z 3.5) would take epoch 1
    assert not [r for r in caplog.records if "below the untrained start" in r.getMessage()]  # -0.2: z -1
    rec = json.loads((tmp_path / "selection.json").read_text())
    assert rec["paired"]["1"]["gain"] == pytest.approx(0.2) and rec["paired"]["1"]["se"] == pytest.approx(0.2)
    assert "over 5 held-out tracklets (closest: epoch 1, +0.2000 against 2 x 0.2000)" in sel.summary()
    with torch.no_grad():
        model.weight.fill_(3)
    sel(model, scored(spread, held), 3)
    assert saved(tmp_path)["selection"]["epoch"] == 3
    # Without tracklets every image is its own unit: the one-tracklet gain is then taken.
    plain = Selector(cfg(tmp_path / "plain"), cams, held)
    for trained, values in enumerate([np.zeros(50), one_tracklet]):
        plain(model, scored(values, held), trained)
    assert saved(tmp_path / "plain")["selection"]["epoch"] == 1


def test_a_run_begun_before_selection_existed_resumes_without_a_start(tmp_path):
    model, sel = torch.nn.Linear(2, 2), Selector(cfg(tmp_path), np.array([0, 1]))
    for trained, score in [(3, 0.3), (4, 0.5), (5, 0.4)]:  # no record, no epoch 0: resumed at 3
        epoch(sel, model, trained, score)
    assert saved(tmp_path)["selection"]["epoch"] == 4
    assert "the start not scored" in sel.summary()
