"""``python -m service.worker``: run background video jobs from Redis (``EMOTION_QUEUE_URL``).

Start any number, on any host that mounts the jobs folder (``EMOTION_JOBS_DIR``) the API writes uploads to. Each
process loads its models once and runs ``EMOTION_QUEUE__WORKER_JOBS`` jobs at a time (1: a job already uses about
two cores); its Prometheus metrics are served on ``EMOTION_QUEUE__WORKER_METRICS_PORT`` (9100). SIGTERM hands the
running job back to the queue (that try not counted); a worker that dies has its job taken over by another after
``EMOTION_QUEUE__LEASE_S``.
"""

from __future__ import annotations

import argparse
import logging

from prometheus_client import start_http_server

from service.config import settings_or_exit
from service.jobs.redis_queue import build_worker
from service.metrics import Metrics


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    return p


def main(args: argparse.Namespace) -> None:
    settings = settings_or_exit()
    if not settings.queue.url:
        raise SystemExit("EMOTION_QUEUE_URL is not set: workers take jobs from Redis (redis://host:6379/0)")
    level = settings.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics = Metrics()
    if settings.queue.worker_metrics_port:
        start_http_server(settings.queue.worker_metrics_port, registry=metrics.registry)
    build_worker(settings, metrics, burst=args.burst).run()


if __name__ == "__main__":
    main(get_args_parser().parse_args())
