"""Smoke test of the benchmark: a quick run on a tiny model completes and writes every figure.

No timing is asserted: the machine is shared and small. The run starts a real
gunicorn (for the web figures) and a child process (for the long track).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import bench
from helpers import ROOT


@pytest.mark.slow
def test_quick_bench_completes_and_reports_every_figure(models_dir, tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", "--quick", "--model", "tiny", "--models-dir", str(models_dir),
         "--clip-seconds", "2", "--long-seconds", "8", "--trace-jobs", "4", "--output", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert set(bench.RESULT_KEYS) <= set(res)

    assert res["model"]["name"] == "tiny" and res["settings"]["quick"] is True
    for key in ("cpu_model", "cpu_count", "backend", "device", "load_average_start", "load_average_end"):
        assert res["machine"][key] is not None, key
    assert res["bare"]["seconds"] > 0 and res["bare"]["eager_s"] > 0 and res["bare"]["compiled_s"] > 0
    assert res["library"]["seconds"] > 0 and res["titrate"]["seconds"] > 0
    assert res["web"]["error"] is None, res["web"]["error"]
    assert res["web"]["cold_s"] > 0 and res["web"]["warm_s"] > 0 and res["web"]["rerun_s"] > 0
    assert res["naive"]["error"] is None and res["naive"]["seconds"] > 0, res["naive"]
    if Path("/proc/self/stat").exists():
        assert res["web"]["warm_cpu_s"] > 0
    assert res["library"]["cpu_s"] > 0 and res["titrate"]["cpu_s"] > 0 and res["long"]["cpu_s"] > 0
    assert res["long"]["error"] is None, res["long"]["error"]
    assert res["long"]["audio_seconds"] == pytest.approx(8.0, abs=0.01)
    assert res["long"]["seconds"] > 0 and res["long"]["rtf"] > 0 and res["long"]["peak_rss_mb"] > 0
    assert res["traces"]["jobs"] == 4 and len(res["traces"]["per_job"]) == 4
    assert isinstance(res["traces"]["count"], int) and res["traces"]["count"] >= 0

    ratios = {row["key"]: row for row in res["ratios"]}
    assert set(ratios) == {t.key for t in bench.TARGETS}
    for row in ratios.values():
        assert row["value"] is not None and row["pass"] in (True, False), row
        assert "cpu_value" in row
    assert ratios["library_over_2bare"]["cpu_value"] > 0

    table = proc.stdout
    for label in ("bare forward pass", "library", "titrate", "web job, warm", "first after start", "long track",
                  "peak RSS", "traces", "load average", "re-run with source=", "naive per-request pipeline",
                  "audio playable"):
        assert label in table, label
    for t in bench.TARGETS:
        assert t.label in table


def test_trace_counter_counts_new_traces_only():
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("traces are counted on the tensorflow backend")
    import tensorflow as tf

    fn = tf.function(lambda x: x * 2.0)
    with bench.TraceCounter() as counter:
        fn(tf.constant(1.0))
        fn(tf.constant(2.0))
        fn(tf.constant([1.0, 2.0]))
    assert counter.available and counter.count == 2
    fn(tf.constant([1.0, 2.0, 3.0]))  # after the counter is removed: not counted
    assert counter.count == 2


def test_ratios_and_verdicts():
    res = {
        "bare": {"seconds": 1.0},
        "library": {"seconds": 2.4},
        "titrate": {"seconds": 8.0},
        "web": {"warm_s": 2.8},
        "naive": {"seconds": 3.5},
        "long": {"seconds": 48.0, "peak_rss_mb": 1024.0},
        "traces": {"count": 0},
    }
    rows = {r["key"]: r for r in bench.compute_ratios(res, 30.0, 600.0)}
    assert rows["library_over_2bare"]["value"] == pytest.approx(1.2) and rows["library_over_2bare"]["pass"]
    assert rows["titrate_over_6bare"]["value"] == pytest.approx(8 / 6) and not rows["titrate_over_6bare"]["pass"]
    assert rows["web_speedup_vs_original"]["value"] == pytest.approx(1.6 / 2.8)
    assert not rows["web_speedup_vs_original"]["pass"]
    assert rows["long_over_20_library"]["value"] == pytest.approx(1.0) and rows["long_over_20_library"]["pass"]
    assert rows["long_peak_rss_gb"]["value"] == pytest.approx(1.0) and rows["long_peak_rss_gb"]["pass"]
    assert rows["warm_traces"]["pass"]
    assert rows["web_over_naive"]["value"] == pytest.approx(0.8) and rows["web_over_naive"]["pass"]
    res["naive"] = {"seconds": 2.0}
    assert not {r["key"]: r for r in bench.compute_ratios(res, 30.0, 600.0)}["web_over_naive"]["pass"]
    res["web"] = {"warm_s": None}
    rows = {r["key"]: r for r in bench.compute_ratios(res, 30.0, 600.0)}
    assert rows["web_warm_over_2bare"]["value"] is None and rows["web_warm_over_2bare"]["pass"] is None


def test_synthesized_music_is_deterministic_and_in_range():
    a = bench.synth_music(1.5, seed=3)
    assert a.shape == (int(1.5 * bench.SR),) and a.dtype.name == "float32"
    assert float(abs(a).max()) < 1.0 and float(abs(a).max()) > 0.05
    assert (a == bench.synth_music(1.5, seed=3)).all()
    assert not (a == bench.synth_music(1.5, seed=4)).all()


@pytest.mark.slow
def test_quick_rq_bench_completes_with_no_job_lost(models_dir, tmp_path):
    """The RQ benchmark (make bench-rq) on the tiny model: 4 short jobs, a worker SIGKILLed, none lost."""
    from benchmarks.servers import RedisServer

    if not RedisServer.available():
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
    out = tmp_path / "rq.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.rq_bench", "--model", "tiny", "--models-dir", str(models_dir),
         "--clip-seconds", "60", "--jobs", "5", "--rounds", "1", "--clients", "2", "--dead-after", "2",
         "--output", str(out)],
        cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    kill = res["kill"]
    assert kill["done"] == kill["jobs"] == 5 and kill["lost"] == 0 and kill["failed"] == 0
    assert kill["positions_global"]
    assert res["hop"]["local_median_s"] > 0 and res["hop"]["rq_median_s"] > 0
    assert res["throughput"]["one_worker"]["done"] == res["throughput"]["two_workers"]["done"] == 5
    assert "queue hop overhead" in proc.stdout and "SIGKILLed" in proc.stdout


def test_librosa_comparison_runs_and_agrees(tmp_path, capsys):
    from benchmarks import librosa_compare

    out = tmp_path / "librosa.json"
    assert librosa_compare.main(["--rounds", "1", "--short", "1", "--long", "2.5", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    for seconds in ("1", "2.5"):
        for task in ("load", "analysis", "synthesis", "process"):
            row = res[f"{task} {seconds} s"]
            assert row["ours_s"] > 0 and row["librosa_s"] > 0 and row["ours_mib"] > 0
            # Both sides compute the same thing (the round trip differs only at librosa's last,
            # singly-covered samples).
            assert row["max_abs_diff"] < (1e-3 if task == "process" else 1e-5), (task, row)
        assert res[f"spectrogram {seconds} s"]["librosa_s"] > 0
    assert "time ours" in capsys.readouterr().out


def test_models_table_measures_every_model_on_every_set(models_dir, tmp_path, capsys):
    import soundfile as sf

    from benchmarks import models_table
    from helpers import tone

    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        sf.write(folder / "x.wav", tone(3.0, seed=len(name)), 22050)
    out = tmp_path / "table.json"
    assert models_table.main(["--heldout", f"music={tmp_path / 'a'}", "--heldout", f"speech={tmp_path / 'b'}",
                              "--models-dir", str(models_dir), "--clips", "1", "--clip-seconds", "2",
                              "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res) == {"tiny", "tinyfixed"}
    for entry in res.values():
        assert entry["music"]["clips"] == entry["speech"]["clips"] == 1
        assert entry["forward"]["gflop_per_s_audio"] > 0
    table = capsys.readouterr().out
    assert "| tiny |" in table and "music: SI-SNR" in table
    with pytest.raises(SystemExit):
        models_table.main(["--heldout", "nolabel", "--models-dir", str(models_dir)])


def test_job_profile_names_every_stage_and_accounts_for_the_job(models_dir):
    from benchmarks import job_profile

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.job_profile", "--model", "tiny", "--models-dir", str(models_dir),
         "--seconds", "2", "--rounds", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {}
    for line in proc.stdout.splitlines()[2:]:
        label, ms = line[:34].strip(), line[34:42].strip()
        rows[label] = float(ms)
    assert set(job_profile.STAGES) <= set(rows)
    assert rows["model passes"] > 0 and rows["WAVs"] > 0
    assert 0 < rows["of which until its audio plays"] <= rows["job, until it is done"]
    staged = sum(rows[s] for s in job_profile.STAGES) + rows["everything else"]
    assert staged == pytest.approx(rows["job, until it is done"], abs=len(rows))  # rounding per row
    assert rows["everything else"] >= -1  # no stage counted twice
    assert rows["3 spectrograms, when first asked"] > 0
