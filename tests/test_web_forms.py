"""Property tests of the job form's validation: any input is accepted sanely or refused in words."""

from __future__ import annotations

import math
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from app.forms import parse_job_form, split_filename
from senseflosser.errors import SenseflosserError
from senseflosser.recipe import ACTIONS

INTERESTING = ["", " ", "0", "0.1", "1", "-1", "2", "nan", "inf", "-0", "1e999", "0x10", "1_000", "4294967295",
               "4294967296", "tiny", "fog", "lapse", "conv_a", "conv_a,conv_b", " conv_b ,conv_a", "on", "yes",
               "../../etc/passwd", "/abs/path.keras", "0.1,0.2", "0.1,0.1", "\x00", "é"]
values = st.one_of(st.none(), st.sampled_from(INTERESTING), st.text(max_size=40))
SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,90}$")


@settings(max_examples=400, deadline=None)
@given(model=values, action=values, magnitude=values, magnitudes=values, titrate=values, seed=values,
       layers=values, offset=values, duration=values, save_model=values,
       filename=st.one_of(st.none(), st.text(max_size=300), st.sampled_from(["../../x.wav", "a\\b.WAV", ".wav"])))
def test_every_form_is_either_valid_or_refused_with_a_message(filename, **fields):
    form = {k: v for k, v in fields.items() if v is not None}
    try:
        job = parse_job_form(form, lambda key: [form[key]] if key in form else [], filename=filename,
                             model_names=["tiny"], conv_layers=lambda model: ["conv_a", "conv_b"])
    except SenseflosserError as exc:
        message = str(exc)
        assert message and len(message) < 400 and "\n" not in message
        return
    assert job.model == "tiny" and job.action in ACTIONS
    assert job.magnitudes and all(math.isfinite(m) and 0 <= m <= 1 for m in job.magnitudes)
    assert len(set(job.magnitudes)) == len(job.magnitudes)
    assert 0 <= job.seed <= 2**32 - 1
    assert math.isfinite(job.offset) and job.offset >= 0
    assert job.duration is None or (math.isfinite(job.duration) and job.duration > 0)
    assert job.layers is None or set(job.layers) <= {"conv_a", "conv_b"}
    assert SAFE_NAME.match(job.filename) and not job.filename.startswith(".")


@given(st.one_of(st.none(), st.text(max_size=5000), st.binary(max_size=300).map(lambda b: b.decode("latin-1"))))
def test_upload_names_become_safe_download_names(name):
    display, stem, ext = split_filename(name)
    assert SAFE_NAME.match(display) and display == stem + ext
    assert not display.startswith(".") and "/" not in display and "\\" not in display
    assert ext == "" or re.fullmatch(r"\.[a-z0-9]{1,8}", ext)
