"""Speed, memory and load benchmarks of senseflosser (they start servers: not core code).

- ``python -m benchmarks.bench`` (``make bench``): model, library and web job figures;
- ``python -m benchmarks.loadtest`` (``make loadtest``): many clients against gunicorn;
- ``python -m benchmarks.rq_bench`` (``make bench-rq``): jobs on RQ workers against the in-process runner;
- :mod:`benchmarks.servers`: the one helper that starts and stops gunicorn, workers and Redis
  (also used by the tests).
"""
