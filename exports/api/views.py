"""Export API: create (202), list, detail, delete, and download (owner only)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.http import FileResponse, Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.metadata import SimpleMetadata
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from capture.validation import describe, flat_errors
from exports import services, tasks
from exports.api.serializers import ExportJobSerializer, ExportRequestSerializer
from exports.models import ExportJob


def own_job(request: Request, job_id) -> ExportJob:
    """The requesting user's job, or 404 (another user's job is indistinguishable from none)."""
    job = ExportJob.objects.filter(pk=job_id, owner=request.user).first()
    if job is None:
        raise Http404("no such export")
    return job


class RequestOptionsMetadata(SimpleMetadata):
    """OPTIONS: DRF's description of the view, plus ``options``: the export request's fields, as the
    dashboard builds its export form from them (the shape of GET /api/config's ``options``)."""

    def determine_metadata(self, request: Request, view: APIView) -> dict[str, Any]:
        return {**super().determine_metadata(request, view), "options": describe(ExportRequestSerializer())}


class ExportListView(APIView):
    """GET: your exports. POST: queue a new export (202 with its id and URL)."""

    metadata_class = RequestOptionsMetadata
    # Each user's own exports only (the queries filter by owner), whatever the role.
    required_permissions = {"GET": "exports.view_exportjob", "POST": "exports.add_exportjob"}

    @extend_schema(responses=ExportJobSerializer(many=True))
    def get(self, request: Request) -> Response:
        jobs = ExportJob.objects.filter(owner=request.user)[:200]
        return Response(ExportJobSerializer(jobs, many=True).data)

    @extend_schema(
        request=ExportRequestSerializer,
        responses={
            202: ExportJobSerializer,
            429: OpenApiResponse(description="NETMON_EXPORT_MAX_ACTIVE_PER_USER exports queued or running"),
        },
        description="Queue a new export (202 with its id and URL). OPTIONS on this path describes the "
        "request's fields, their choices and defaults (``options``, as in GET /api/config).",
    )
    def post(self, request: Request) -> Response:
        body = ExportRequestSerializer(data=request.data, context={"request": request})
        if not body.is_valid():
            return Response(
                {"detail": "invalid export request", "fields": flat_errors(body.errors)}, status=400
            )
        try:
            with transaction.atomic():
                job = services.create_export(request.user, body.validated_data)
                transaction.on_commit(lambda: tasks.run_export.delay(str(job.id)))
        except services.TooManyExports as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_429_TOO_MANY_REQUESTS)
        created = ExportJobSerializer(job).data
        return Response(created, status=status.HTTP_202_ACCEPTED, headers={"Location": created["url"]})


class ExportDetailView(APIView):
    """GET one of your exports; DELETE it and its file."""

    required_permissions = {"GET": "exports.view_exportjob", "DELETE": "exports.delete_exportjob"}

    @extend_schema(responses=ExportJobSerializer)
    def get(self, request: Request, job_id) -> Response:
        return Response(ExportJobSerializer(own_job(request, job_id)).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, job_id) -> Response:
        services.delete_export(own_job(request, job_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class ExportDownloadView(APIView):
    """GET the encrypted file of one of your succeeded exports (streamed)."""

    required_permissions = {"GET": "exports.view_exportjob"}

    @extend_schema(
        responses={
            (200, "application/octet-stream"): OpenApiResponse(description="the export file"),
            409: OpenApiResponse(description="the export has not succeeded (yet)"),
            410: OpenApiResponse(description="the file is gone (expired or deleted)"),
        }
    )
    def get(self, request: Request, job_id):
        job = own_job(request, job_id)
        if job.status != ExportJob.Status.SUCCEEDED or not job.file_path:
            return Response({"detail": f"export is {job.status}, not ready to download"}, status=409)
        try:
            handle = open(job.file_path, "rb")  # noqa: SIM115 - FileResponse closes it
        except FileNotFoundError:
            return Response({"detail": "the export file is gone (expired or deleted)"}, status=410)
        name = f"netmon-{job.dataset}-{job.id}.{job.format}.nmx"
        return FileResponse(
            handle, as_attachment=True, filename=name, content_type="application/octet-stream"
        )
