"""The Celery app: configured from Django settings (CELERY_*), tasks discovered in each app."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable

from celery import Celery
from celery.signals import task_postrun, worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "netmon.settings")

app = Celery("netmon")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

GC_INTERVAL = 5.0  # seconds: a worker pool process collects cyclic garbage at most this long apart...
GC_BUDGET = 0.01  # ...unless a collection costs more than this share of the time between two


@worker_process_init.connect
def _one_blas_thread(**_: object) -> None:
    """Each worker process scores with one BLAS thread: the matrices of a batch are small, and
    OpenBLAS's second thread made the autoencoder's forward pass 2-20x slower, not faster (the
    worker processes are the parallelism)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


class GarbageCollector:
    """A full collection of cyclic garbage after a task, every ``interval`` seconds at most.

    Every failed or retried task leaves a reference cycle behind (Celery's ExceptionInfo of the
    exception, its traceback and frames; on Python 3.11 billiard copies each frame's code positions
    into lists of tuples): ~235 KB of small objects per retry. CPython collects the oldest
    generation only when the objects pending there exceed a quarter of all long-lived objects, and
    a worker has over 110,000 of those after start-up and ~140,000 more once a model is loaded. Under
    overload, when the ingest tasks of a busy sensor retry every half second while another process
    holds its lock, a pool process held 150-220 MB of such garbage between full collections, and
    its RSS kept the high-water mark (``sys._debugmallocstats`` before and after ``gc.collect()``).

    Start-up objects are frozen (``gc.freeze``: never collected, never walked again). A collection
    still walks what the first batch imports (scikit-learn, Numba: ~75 ms on the 2-core machine),
    so the gap between collections grows to keep their CPU time under ``budget`` of the time between.
    """

    def __init__(
        self,
        interval: float = GC_INTERVAL,
        budget: float = GC_BUDGET,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self.interval = interval
        self.budget = budget
        self.clock = clock
        self.cpu_clock = cpu_clock
        self.enabled = False
        self.gap = interval
        self.last = 0.0
        self.collections = 0

    def start(self) -> None:
        """In a new pool process: drop what start-up left over, then freeze the rest."""
        gc.collect()
        gc.freeze()
        self.enabled = True
        self.last = self.clock()

    def after_task(self) -> None:
        if not self.enabled or self.clock() - self.last < self.gap:
            return
        cpu = self.cpu_clock()
        gc.collect()
        self.collections += 1
        self.gap = max(self.interval, (self.cpu_clock() - cpu) / self.budget)
        self.last = self.clock()


collector = GarbageCollector()


@worker_process_init.connect
def _collect_garbage_promptly(**_: object) -> None:
    collector.start()


@task_postrun.connect
def _collect_after_task(**_: object) -> None:
    collector.after_task()
