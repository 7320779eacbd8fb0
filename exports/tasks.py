"""Export tasks: a base class owns status, errors and progress events; each task calls one function."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from celery import Task, shared_task
from django.conf import settings
from django.utils import timezone

from capture import events
from exports import services
from exports.models import ExportJob

log = logging.getLogger(__name__)


def job_event(job: ExportJob) -> dict:
    return {
        "id": str(job.id),
        "status": job.status,
        "rows_written": job.rows_written,
        "row_count": job.row_count,
        "size_bytes": job.size_bytes,
        "download_url": f"/api/exports/{job.id}/download"
        if job.status == ExportJob.Status.SUCCEEDED
        else None,
        "error": job.error,
    }


class ExportJobTask(Task):
    """Owns an export job's lifecycle: running, then succeeded or failed, with events to its owner."""

    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True

    def execute(self, job_id: str, work: Callable[[ExportJob], None]) -> str:
        job = ExportJob.objects.filter(pk=job_id).first()
        if job is None or job.status in {ExportJob.Status.SUCCEEDED, ExportJob.Status.EXPIRED}:
            return "nothing to do"
        job.status, job.started_at, job.error = ExportJob.Status.RUNNING, timezone.now(), ""
        job.save(update_fields=["status", "started_at", "error"])
        try:
            work(job)
        except Exception as exc:
            log.warning("export %s failed: %s", job.id, exc.__class__.__name__)
            job.status, job.error = (
                ExportJob.Status.FAILED,
                f"{exc}".splitlines()[0][:500] or exc.__class__.__name__,
            )
            job.finished_at = timezone.now()
            job.save()
            events.broadcast(
                events.export_group(job.owner_id), {"type": "export.ready", "job": job_event(job)}
            )
            return job.status
        job.status, job.finished_at = ExportJob.Status.SUCCEEDED, timezone.now()
        job.expires_at = job.finished_at + timedelta(hours=settings.NETMON_EXPORT_MAX_AGE_HOURS)
        job.save()
        events.broadcast(events.export_group(job.owner_id), {"type": "export.ready", "job": job_event(job)})
        return job.status

    def progress(self, job: ExportJob, rows: int) -> None:
        ExportJob.objects.filter(pk=job.pk).update(rows_written=rows)
        job.rows_written = rows
        events.broadcast(
            events.export_group(job.owner_id), {"type": "export.progress", "job": job_event(job)}
        )


@shared_task(bind=True, base=ExportJobTask, name="exports.run_export")
def run_export(self: ExportJobTask, job_id: str) -> str:
    """Write the export file of job ``job_id`` (safe to retry: a finished job is left alone)."""
    return self.execute(
        job_id, lambda job: services.write_export(job, on_progress=lambda n: self.progress(job, n))
    )


@shared_task(name="exports.expire_exports", ignore_result=True)
def expire_exports() -> int:
    """Beat: delete export files older than NETMON_EXPORT_MAX_AGE_HOURS."""
    return services.expire_exports(settings.NETMON_EXPORT_MAX_AGE_HOURS)
