"""The job spec: every value checked once where it is built, then trusted."""

from __future__ import annotations

import json

import pytest

from senseflosser import envelope
from senseflosser.actions import base as actions_base
from senseflosser.errors import MagnitudeError, RecipeError
from senseflosser.jobspec import MAX_MAGNITUDES, JobSpec, Outputs, build_job


def _job(**kw):
    return build_job(**{"model": "m", "action": "fog", "seed": 1, **kw})


def test_magnitudes_are_split_checked_and_kept_in_order():
    assert _job(magnitudes="0.01, 0.1").magnitudes == (0.01, 0.1)
    assert _job(action="lapse", magnitudes=[0.5, "0.2"]).magnitudes == (0.5, 0.2)
    assert _job(magnitudes=0.3).magnitudes == (0.3,)
    for bad, match in (("", "give a magnitude"), ("0.1,x", "fog magnitude"),
                       (",".join(["0.1"] * (MAX_MAGNITUDES + 1)), "at most"), ("0.1,0.10", "only once"),
                       ("١", "fog magnitude")):
        with pytest.raises(RecipeError, match=match):
            _job(magnitudes=bad)
    with pytest.raises(MagnitudeError):
        _job(action="lapse", magnitudes="3")


def test_titration_and_seed_and_layers():
    job = _job(titrate=True, layers="conv_b, conv_a:3,1", conv_layers={"conv_a": 4, "conv_b": 4})
    assert len(job.recipes) == 5 and {r.seed for r in job.recipes} == {1}
    assert job.base.layers == ("conv_b", "conv_a:1,3")
    with pytest.raises(RecipeError, match="not a conv layer"):
        _job(magnitudes="0.1", layers="nope", conv_layers={"conv_a": 4})
    assert 0 <= build_job(model="m", action="fog", magnitudes="0.1").base.seed < 2**32


def test_each_magnitude_is_checked_once(monkeypatch):
    calls = []
    original = actions_base.MagnitudeSpec.validate
    monkeypatch.setattr(actions_base.MagnitudeSpec, "validate",
                        lambda self, m, a: calls.append(m) or original(self, m, a))
    job = _job(magnitudes="0.01,0.02,0.05")
    assert sorted(calls) == ["0.01", "0.02", "0.05"]
    calls.clear()
    again = JobSpec.from_checked(json.loads(job.to_json()))
    assert again == job and calls == []  # off the queue: trusted


def test_an_envelope_shortcut_waits_for_the_audio_then_becomes_points():
    job = _job(action="lapse", envelope="ramp:0,0.4")
    assert job.envelope == envelope.Shape("ramp", (0.0, 0.4)) and job.base.envelope is None
    assert job.base.magnitude == 0.4 and job.enveloped
    fixed = job.fixed(6.0)
    assert fixed.envelope is None and fixed.base.envelope == ((0.0, 0.0), (6.0, 0.4))
    assert fixed.base.slug == "lapse_envelope"
    assert JobSpec.from_checked(job.to_dict()) == job  # the shortcut travels as text
    lfo = _job(action="lapse", envelope="lfo:0,0.2,2", seconds=4.0)
    assert lfo.base.envelope == envelope.resolve("lfo:0,0.2,2", 4.0)
    with pytest.raises(RecipeError, match="lapse magnitude"):
        _job(action="lapse", envelope="ramp:0,3")
    with pytest.raises(RecipeError, match="beyond the end"):
        _job(action="lapse", envelope="0:0,30:0.1").fixed(10.0)
    with pytest.raises(RecipeError, match="either an envelope or magnitudes"):
        _job(magnitudes="0.1", envelope="ramp:0,0.1")


def test_declared_parameters_are_checked_and_recorded():
    job = _job(action="adversarial", magnitudes="0.001", params={"adversarial_on_input": "1"})
    assert dict(job.base.params) == {"on_input": True} and job.base.slug == "adversarial-input_0.001"
    assert dict(_job(action="adversarial", magnitudes="0.001").base.params) == {"on_input": False}
    with pytest.raises(RecipeError, match="fog has no parameter"):
        _job(magnitudes="0.1", params={"on_input": True})


def test_outputs_and_model_are_part_of_the_spec():
    job = _job(magnitudes="0.1", outputs=Outputs(spectrograms=True, stem="audio"))
    assert JobSpec.from_checked(json.loads(job.to_json())).outputs == Outputs(spectrograms=True, stem="audio")
    named = job.for_model("tiny", "abc", {"conv_a": 4})
    assert named.base.model == "tiny" and named.base.model_sha256 == "abc"
    with pytest.raises(RecipeError, match="not a conv layer"):
        _job(magnitudes="0.1", layers="conv_z").for_model("tiny", "", {"conv_a": 4})
