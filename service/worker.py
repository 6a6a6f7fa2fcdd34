"""``python -m service.worker``: run background video jobs from Redis (``EMOTION_QUEUE_URL``).

Start any number, on any host that mounts the jobs folder (``EMOTION_JOBS_DIR``) the API writes uploads to. Each
process loads its models once and runs ``EMOTION_QUEUE__WORKER_JOBS`` jobs at a time (1: a job already uses about
two cores); its Prometheus metrics are served on ``EMOTION_QUEUE__WORKER_METRICS_PORT`` (9100), or, when another
worker on the host has that port, on the next free one of ``EMOTION_QUEUE__WORKER_METRICS_PORTS`` (logged; none
free: metrics off, logged), so any number of workers start on one host. SIGTERM hands the running job back to the
queue (that try not counted); a worker that dies has its job taken over by another after ``EMOTION_QUEUE__LEASE_S``.
"""

from __future__ import annotations

import argparse
import logging

from prometheus_client import start_http_server
from redis.exceptions import RedisError

from service.config import settings_or_exit
from service.jobs.redis_queue import build_worker, unanswered
from service.metrics import Metrics

log = logging.getLogger("service.worker")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    return p


def serve_metrics(metrics: Metrics, first: int, tries: int) -> int | None:
    """Serve ``/metrics`` on ``first``, else on the next free port of ``tries``; the port, or None (metrics off)."""
    for port in range(first, min(first + tries, 65536)):
        try:
            start_http_server(port, registry=metrics.registry)
        except OSError as exc:
            log.warning("worker metrics port %d is taken (%s); trying the next", port, exc.strerror or exc)
            continue
        log.info("worker metrics on port %d%s", port, "" if port == first else f" ({first} was taken)")
        return port
    log.warning(
        "worker metrics off: ports %d-%d are all taken; set EMOTION_QUEUE__WORKER_METRICS_PORT to a free range",
        first,
        first + tries - 1,
    )
    return None


def main(args: argparse.Namespace) -> None:
    settings = settings_or_exit()
    if not settings.queue.url:
        raise SystemExit("EMOTION_QUEUE_URL is not set: workers take jobs from Redis (redis://host:6379/0)")
    level = settings.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics = Metrics()
    if settings.queue.worker_metrics_port:
        serve_metrics(metrics, settings.queue.worker_metrics_port, settings.queue.worker_metrics_ports)
    try:
        build_worker(settings, metrics, burst=args.burst).run()
    except RedisError as exc:  # Redis gone before arq's retries ran out: say what to fix, not a traceback
        raise SystemExit(unanswered(settings.queue.url, exc)) from exc


if __name__ == "__main__":
    main(get_args_parser().parse_args())
