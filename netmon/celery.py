"""The Celery app: configured from Django settings (CELERY_*), tasks discovered in each app."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "netmon.settings")

app = Celery("netmon")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _one_blas_thread(**_: object) -> None:
    """Each worker process scores with one BLAS thread: the matrices of a batch are small, and
    OpenBLAS's second thread made the autoencoder's forward pass 2-20x slower, not faster (the
    worker processes are the parallelism)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
