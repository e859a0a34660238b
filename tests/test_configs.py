"""seti_auditor.configs.from_json: configs from the JSON a deployment run hands a flow (pure, no I/O)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from seti_auditor.cadence_search import LineSearchConfig
from seti_auditor.cadence_test import CadenceConfig
from seti_auditor.configs import from_json
from seti_auditor.drift import DriftConfig
from seti_auditor.score_archive import ScoreJob
from seti_auditor.scoring import ScoreConfig
from seti_auditor.stats import ThresholdConfig
from seti_auditor.tiling import TilingConfig
from seti_auditor.training import TrainJob

# every config a flow takes as a parameter, and every config nested in one, each with its defaults and
# with settings that differ from them in every kind of field (int, float, str, bool, None, tuples, nesting)
CONFIGS = [
    TilingConfig(),
    TilingConfig(tile_time=8, tile_freq=64, overlap_freq=16, coarse_channel_width=1024, premask_sigma=2.5,
                 chunk_tiles=32),
    TrainJob(),
    TrainJob(preset="article", epochs=3, learning_rate=1e-3, known_signals=((1420.0, 1420.5), (1612.0, 1613.0)),
             resume=False, score=ScoreConfig(score="mse")),
    ScoreJob(),
    ScoreJob(score=ScoreConfig(drift_step=0.25, widths=(1, 3), phases=(0.0,)),
             thresholds=ThresholdConfig(method="article", k=4.0), cadence=CadenceConfig(off_scope="all"),
             lines=LineSearchConfig(enabled=True, max_seeds=10), band_mhz=12.5),
    ScoreConfig(),
    ScoreConfig(score="mse", max_drift=2.0, drift_step=0.5, subbands=1),
    ThresholdConfig(),
    ThresholdConfig(method="empirical", alpha=0.01, tail="none"),
    CadenceConfig(),
    CadenceConfig(min_on_scans=3, match="tile", freq_tol_mhz=1e-4),
    LineSearchConfig(),
    LineSearchConfig(enabled=True, seed_p=0.01, q=0.05),
    DriftConfig(),
    DriftConfig(max_shift_sigma=2.0, min_tiles=8, seed=3),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: type(c).__name__)
def test_round_trip_through_json(config):
    """asdict -> JSON text -> from_json gives the same config back, with tuples where the class has tuples."""
    text = json.dumps(dataclasses.asdict(config))
    back = from_json(type(config), json.loads(text))
    assert back == config
    assert type(back) is type(config)
    hash(back)  # frozen and built of tuples (ScoreConfig is a static argument of a jitted function)


def test_none_gives_the_defaults_and_an_instance_is_returned_as_is():
    assert from_json(ScoreJob, None) == ScoreJob()
    job = TrainJob(epochs=2)
    assert from_json(TrainJob, job) is job


def test_a_partial_dict_keeps_every_other_default():
    job = from_json(TrainJob, {"epochs": 2})
    assert job == dataclasses.replace(TrainJob(), epochs=2)


def test_nested_partial_dicts_are_laid_over_the_field_default():
    """ScoreJob's thresholds default to q = 0.05 (not ThresholdConfig's 0.01): a partial override keeps it."""
    job = from_json(ScoreJob, {"thresholds": {"method": "robust"}, "lines": {"enabled": True}})
    assert job.thresholds == ThresholdConfig(method="robust", q=0.05)
    assert job.thresholds.q == ScoreJob().thresholds.q != ThresholdConfig().q
    assert job.cadence == ScoreJob().cadence and job.cadence.min_on_scans == 2  # untouched nested default
    assert job.lines == LineSearchConfig(enabled=True)
    assert from_json(ScoreJob, {"thresholds": {"q": 0.01}}).thresholds.q == 0.01


def test_json_lists_and_numbers_take_the_field_types():
    job = from_json(TrainJob, {"known_signals": [[1420, 1421.5]], "learning_rate": 1, "score": {"widths": [2, 4]}})
    assert job.known_signals == ((1420.0, 1421.5),) and isinstance(job.known_signals[0][0], float)
    assert job.learning_rate == 1.0 and isinstance(job.learning_rate, float)
    assert job.score.widths == (2, 4)
    assert from_json(ScoreConfig, {"drift_step": None}).drift_step is None
    assert from_json(ScoreConfig, {"drift_step": 1}).drift_step == 1.0


@pytest.mark.parametrize("cls, value, name, path, owner", [
    (ScoreJob, {"thresholds": {"qq": 0.01}}, "score", "score.thresholds.qq", "ThresholdConfig"),
    (ScoreJob, {"cadnce": {}}, "score", "score.cadnce", "ScoreJob"),
    (TrainJob, {"epochs": 2, "score": {"scor": "mse"}}, "train", "train.score.scor", "ScoreConfig"),
    (TilingConfig, {"tile": [16, 256]}, "tiling", "tiling.tile", "TilingConfig"),
    (DriftConfig, {"max_shift": 3}, None, "max_shift", "DriftConfig"),
])
def test_an_unknown_key_names_its_path_and_class(cls, value, name, path, owner):
    with pytest.raises(ValueError) as err:
        from_json(cls, value, name)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "unknown key" in message and owner in message


@pytest.mark.parametrize("cls, value, path, what", [
    (TrainJob, {"epochs": "20"}, "job.epochs", "TrainJob.epochs must be int, got str '20'"),
    (TrainJob, {"epochs": 2.5}, "job.epochs", "TrainJob.epochs must be int, got float 2.5"),
    (TrainJob, {"epochs": True}, "job.epochs", "must be int, got bool True"),
    (TrainJob, {"resume": 1}, "job.resume", "TrainJob.resume must be bool, got int 1"),
    (TrainJob, {"known_signals": [[1, 2, 3]]}, "job.known_signals[0]", "3 items instead of 2"),
    (TrainJob, {"known_signals": [1420.0, 1421.0]}, "job.known_signals[0]", "TrainJob.known_signals[0]"),
    (ScoreJob, {"score": {"widths": [1, "2"]}}, "job.score.widths[1]", "ScoreConfig.widths[1] must be int"),
    (ScoreJob, {"thresholds": 0.01}, "job.thresholds", "ScoreJob.thresholds must be ThresholdConfig"),
    (ScoreJob, {"score": {"drift_step": "fine"}}, "job.score.drift_step", "must be float | None"),
    (ScoreJob, {"thresholds": {"method": None}}, "job.thresholds.method", "must be str, got NoneType None"),
])
def test_a_wrong_type_names_its_path_class_and_reason(cls, value, path, what):
    with pytest.raises(ValueError) as err:
        from_json(cls, value, "job")
    message = str(err.value)
    assert message.startswith(f"{path}: ") and what in message


def test_the_class_own_checks_are_reported_with_the_path():
    with pytest.raises(ValueError, match=r"^score\.thresholds: ThresholdConfig refuses these settings: .*q=2\.0"):
        from_json(ScoreJob, {"thresholds": {"q": 2.0}}, "score")
    with pytest.raises(ValueError, match=r"^tiling: TilingConfig refuses these settings: overlap_freq"):
        from_json(TilingConfig, {"overlap_freq": 256}, "tiling")


def test_something_else_than_an_object_is_refused():
    with pytest.raises(ValueError, match=r"^score: ScoreJob expects a JSON object of its settings, got list"):
        from_json(ScoreJob, [], "score")
    with pytest.raises(ValueError, match=r"^TrainJob: TrainJob expects a JSON object of its settings, got str"):
        from_json(TrainJob, "epochs=2")
    with pytest.raises(ValueError, match="got TrainJob"):  # another config class is not this one
        from_json(ScoreJob, TrainJob(), "score")
    with pytest.raises(TypeError):
        from_json(dict, {})


def test_every_flow_converts_its_config_parameters_first():
    """The flows refuse a bad setting before they touch the work directory (their bare functions, no run)."""
    from flows.ingest import ingest_flow
    from flows.run import run_flow
    from flows.score import score_flow
    from flows.train import train_flow

    missing = "/nonexistent/seti-auditor-workdir"  # never reached: conversion comes first
    with pytest.raises(ValueError, match=r"^tiling\.tile_freq: TilingConfig\.tile_freq must be int"):
        ingest_flow.fn("/nonexistent/archive", missing, tiling={"tile_freq": "256"})
    with pytest.raises(ValueError, match=r"^job\.epochs: TrainJob\.epochs must be int"):
        train_flow.fn(missing, {"epochs": "2"})
    with pytest.raises(ValueError, match=r"^job\.thresholds\.qq: unknown key of ThresholdConfig"):
        score_flow.fn(missing, {"thresholds": {"qq": 0.01}})
    for param, value, path in (("tiling", {"tile_time": 0}, "tiling"), ("train", {"epoch": 2}, "train.epoch"),
                               ("score", {"lines": {"q": "0.1"}}, "score.lines.q"),
                               ("drift", {"seed": 0.5}, "drift.seed")):
        with pytest.raises(ValueError, match=rf"^{path.replace('.', '[.]')}: "):
            run_flow.fn("/nonexistent/archive", missing, **{param: value})
