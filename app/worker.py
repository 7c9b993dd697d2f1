"""A model-warm RQ worker: ``python -m app.worker`` in the project root (``make worker``).

One process, one device: it sets up TensorFlow's device, loads and warms up every
model of the registry once, then takes jobs from the RQ queue and runs each in
this same process (RQ's ``SimpleWorker``: no fork per job, so TensorFlow is never
initialised before a fork and the models stay warm). Run one per GPU, each with
its own ``CUDA_VISIBLE_DEVICES``, on as many machines as you like; every one of
them must mount the web servers' data dir (``SENSEFLOSSER_DATA_DIR``).

While a job runs, a thread heartbeats it in Redis every ``--heartbeat`` seconds;
when a worker dies, its job's heartbeat lapses ``--dead-after`` seconds later and
the next maintenance round (this thread in every worker, and each web process's
janitor) re-queues it for another worker, or fails it after ``MAX_ATTEMPTS`` starts.

Settings come from the same ``SENSEFLOSSER_*`` environment as the web app
(``REDIS_URL``, ``QUEUE_NAME``, ``MODELS_DIR``, ``DATA_DIR``, ``SPECTROGRAMS``,
``MAX_DURATION_S``, ``WORKER_HEARTBEAT_S``, ``WORKER_DEAD_AFTER_S``); options override them.

This module is the worker's only entry point. It is part of the web app, which the
package does not install, and the core library never imports it (nor rq or redis).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("app.worker")


def _simple_worker_class():
    from rq import SimpleWorker

    class ModelWarmWorker(SimpleWorker):
        """SimpleWorker (jobs run in this process) that heartbeats the running job from a thread,
        and runs maintenance (abandoned jobs of dead workers) every ``heartbeat_s``."""

        heartbeat_s: float = 5.0
        dead_after_s: float = 60.0

        def get_heartbeat_ttl(self, job) -> int:
            return int(self.heartbeat_s + self.dead_after_s)

        def execute_job(self, job, queue):
            stop = threading.Event()

            def beat() -> None:
                while not stop.wait(self.heartbeat_s):
                    try:
                        self.maintain_heartbeats(job)
                    except Exception:  # noqa: BLE001  (Redis away a moment: try again next beat)
                        log.warning("heartbeat of job %s failed", job.id, exc_info=True)

            beater = threading.Thread(target=beat, name="senseflosser-heartbeat", daemon=True)
            self.prepare_execution(job)
            beater.start()
            try:
                self.perform_job(job, queue)
            finally:
                stop.set()
                beater.join()
            from rq.worker import WorkerStatus

            self.set_state(WorkerStatus.IDLE)

    return ModelWarmWorker


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m app.worker",
                                description="Model-warm RQ worker for senseflosser web jobs (one per GPU).")
    p.add_argument("--redis-url", help="Redis URL (default $SENSEFLOSSER_REDIS_URL)")
    p.add_argument("--queue", help="queue name (default $SENSEFLOSSER_QUEUE_NAME or senseflosser)")
    p.add_argument("--models-dir", help="model registry folder (default $SENSEFLOSSER_MODELS_DIR or models/)")
    p.add_argument("--data-dir", help="the shared data dir (default $SENSEFLOSSER_DATA_DIR or instance/jobs)")
    p.add_argument("--name", help="worker name (default host.pid)")
    p.add_argument("--heartbeat", type=float, help="seconds between heartbeats of a running job (default 5)")
    p.add_argument("--dead-after", type=float,
                   help="seconds without a heartbeat after which a job's worker counts as dead (default 60)")
    p.add_argument("--burst", action="store_true", help="stop when the queue is empty")
    p.add_argument("--log", default="INFO", type=str.upper, choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The app's configuration (defaults, then environment), with the options on top."""
    from .config import DEFAULTS, PROJECT_ROOT, ConfigError, from_environment, resolve

    config: dict[str, Any] = {key: default for key, (default, _help) in DEFAULTS.items()}
    config.update(from_environment())
    for key, value in (("REDIS_URL", args.redis_url), ("QUEUE_NAME", args.queue), ("MODELS_DIR", args.models_dir),
                       ("DATA_DIR", args.data_dir), ("WORKER_HEARTBEAT_S", args.heartbeat),
                       ("WORKER_DEAD_AFTER_S", args.dead_after)):
        if value is not None:
            config[key] = value
    resolve(config, str(PROJECT_ROOT / "instance"))
    if not config["REDIS_URL"]:
        raise ConfigError("a worker needs Redis: set SENSEFLOSSER_REDIS_URL (e.g. redis://127.0.0.1:6379/0) "
                          "or pass --redis-url")
    return config


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from .config import ConfigError

    try:
        config = settings(args)
    except ConfigError as exc:
        print(f"worker: error: {exc}", file=sys.stderr)
        return 2
    # This process is the worker from here on: its log lines go to stderr.
    logging.basicConfig(level=args.log, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)

    from redis.exceptions import RedisError
    from rq import Queue

    from senseflosser import device

    from .engine import Engine
    from .jobs import JobStore
    from .jobs.rq_runner import connect, publish_device, recover_abandoned
    from .jobs.task import WorkerContext, install

    connection = connect(config["REDIS_URL"])
    try:
        connection.ping()
    except RedisError as exc:
        print(f"worker: error: cannot reach Redis at {config['REDIS_URL']}: {exc}", file=sys.stderr)
        return 1
    data_dir = Path(config["DATA_DIR"])
    if not data_dir.is_dir() or not os.access(data_dir, os.W_OK):
        print(f"worker: error: the data dir {data_dir} is missing or not writable; mount the web servers' "
              "data dir here and set SENSEFLOSSER_DATA_DIR to it", file=sys.stderr)
        return 1
    store = JobStore(data_dir)

    described = device.describe()  # device set-up before any model is loaded
    log.info("device: %s", described)
    engine = Engine(config["MODELS_DIR"], max_duration=config["MAX_DURATION_S"],
                    spectrograms=config["SPECTROGRAMS"])
    engine.warm_up()
    if not engine.model_names():
        print(f"worker: error: no usable model in {config['MODELS_DIR']}", file=sys.stderr)
        return 1

    def execute(job_id: str, state: dict, progress) -> dict:
        return engine.render(store.root / job_id, state["request"], progress)

    install(WorkerContext(store=store, execute=execute))
    queue = Queue(config["QUEUE_NAME"], connection=connection)
    worker_class = _simple_worker_class()
    worker_class.heartbeat_s = float(config["WORKER_HEARTBEAT_S"])
    worker_class.dead_after_s = float(config["WORKER_DEAD_AFTER_S"])
    name = args.name or f"{socket.gethostname()}.{os.getpid()}"
    worker = worker_class([queue], connection=connection, name=name,
                          job_monitoring_interval=max(1, int(config["WORKER_HEARTBEAT_S"])))

    stop = threading.Event()

    def maintain() -> None:
        while not stop.wait(worker_class.heartbeat_s):
            try:
                recover_abandoned(queue)
            except Exception:  # noqa: BLE001
                log.warning("maintenance round failed", exc_info=True)

    publish_device(queue, name, described)
    recover_abandoned(queue)
    threading.Thread(target=maintain, name="senseflosser-maintenance", daemon=True).start()
    log.info("worker %s ready: models %s, queue %r, data dir %s", name, ", ".join(engine.loaded()), queue.name,
             data_dir)
    try:
        worker.work(burst=args.burst, logging_level=args.log, with_scheduler=False)
    finally:
        stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
