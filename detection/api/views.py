"""Detection API: incidents (list, status, suppress), anomalies (list, mark false positive), model
versions, suppression rules (list, create, delete)."""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from capture import evidence as capture_evidence
from capture import services as capture_services
from capture.api.views import PCAP_RESPONSES, gone_response, pcap_response
from capture.validation import flat_errors
from detection import evidence, services, suppression, tasks, timeline
from detection.api.filters import AnomalyFilter, IncidentFilter
from detection.api.serializers import (
    AnomalySerializer,
    DetectionModelSerializer,
    IncidentAnomaliesQuerySerializer,
    IncidentDetailSerializer,
    IncidentSerializer,
    IncidentStatusSerializer,
    SuppressionRuleSerializer,
    TimelineQuerySerializer,
    TimelineSerializer,
    TrainRequestSerializer,
)
from detection.models import Anomaly, DetectionModel, Incident, SuppressionRule
from detection.validation import SuppressFromIncidentSerializer, SuppressionRuleRequestSerializer


class AnomalyListView(generics.ListAPIView):
    """GET /api/anomalies/: newest first; filter by sensor, ip, time, score, false_positive, incident."""

    required_permissions = {"GET": "detection.view_anomaly"}
    serializer_class = AnomalySerializer
    filterset_class = AnomalyFilter
    queryset = Anomaly.objects.select_related("sensor")


class AnomalyDetailView(generics.RetrieveUpdateAPIView):
    """GET one anomaly; PATCH {"false_positive": true} to mark it (it then counts as normal in training)."""

    required_permissions = {"GET": "detection.view_anomaly", "PATCH": "detection.change_anomaly"}
    serializer_class = AnomalySerializer
    queryset = Anomaly.objects.select_related("sensor", "false_positive_by")
    http_method_names = ["get", "patch", "options"]

    def perform_update(self, serializer: AnomalySerializer) -> None:
        if "false_positive" in serializer.validated_data:
            services.mark_false_positive(
                serializer.instance, serializer.validated_data["false_positive"], self.request.user
            )


class ModelListView(generics.ListAPIView):
    """GET /api/models/: every trained version, with which one is active per kind."""

    required_permissions = {"GET": "detection.view_detectionmodel"}
    serializer_class = DetectionModelSerializer
    queryset = DetectionModel.objects.all()
    pagination_class = None


class ModelActivateView(APIView):
    """POST /api/models/{id}/activate: make this version the active one of its kind."""

    required_permissions = {"POST": "detection.change_detectionmodel"}

    @extend_schema(
        request=None,
        responses={
            200: DetectionModelSerializer,
            409: OpenApiResponse(description="this version cannot be activated (e.g. not ready)"),
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        row = generics.get_object_or_404(DetectionModel, pk=pk)
        try:
            services.activate_model(row)
        except services.ActivationError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(DetectionModelSerializer(row).data)


class ModelTrainView(APIView):
    """POST /api/models/train: train on stored packets in a Celery task; 202 with the new version."""

    required_permissions = {"POST": "detection.add_detectionmodel"}

    @extend_schema(request=TrainRequestSerializer, responses={202: DetectionModelSerializer})
    def post(self, request: Request) -> Response:
        body = TrainRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        config = capture_services.get_config()
        since, until = data.get("since"), data.get("until")
        with transaction.atomic():
            row = services.create_training(
                data.get("model", config.ml_model), data.get("feature_level", config.feature_level),
                f"stored packets {since or 'start'} .. {until or 'now'}", request.user,
            )  # fmt: skip
            transaction.on_commit(
                lambda: tasks.train_model.delay(
                    row.pk, since.isoformat() if since else None, until.isoformat() if until else None,
                    data.get("sensor"),
                )
            )  # fmt: skip
        return Response(DetectionModelSerializer(row).data, status=status.HTTP_202_ACCEPTED)


class IncidentListView(generics.ListAPIView):
    """GET /api/incidents/: latest first; filter by status, kind, severity, ip, since, until, sensor."""

    required_permissions = {"GET": "detection.view_incident"}
    serializer_class = IncidentSerializer
    filterset_class = IncidentFilter
    queryset = Incident.objects.opened().select_related("sensor", "status_changed_by")


class IncidentDetailView(generics.RetrieveAPIView):
    """GET one incident; PATCH {"status": ...} to acknowledge, resolve, reopen or mark it a false positive."""

    required_permissions = {"GET": "detection.view_incident", "PATCH": "detection.change_incident"}
    serializer_class = IncidentDetailSerializer
    queryset = Incident.objects.opened().select_related("sensor", "status_changed_by")
    http_method_names = ["get", "patch", "options"]

    @extend_schema(
        request=IncidentStatusSerializer,
        responses={
            200: IncidentSerializer,
            400: OpenApiResponse(description="unknown status (the answer names the allowed ones)"),
            409: OpenApiResponse(description="the incident cannot go to that status from its own"),
        },
    )
    def patch(self, request: Request, pk: int) -> Response:
        incident = self.get_object()
        body = IncidentStatusSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            incident = services.change_incident_status(incident, body.validated_data["status"], request.user)
        except services.TransitionError as exc:
            return Response({"detail": str(exc), "status": [str(exc)]}, status=status.HTTP_409_CONFLICT)
        return Response(IncidentDetailSerializer(self.get_queryset().get(pk=incident.pk)).data)


class IncidentAnomaliesView(generics.ListAPIView):
    """GET /api/incidents/{id}/anomalies/: the incident's anomalies, newest first (``order=score``:
    the highest scores first)."""

    required_permissions = {"GET": "detection.view_anomaly"}
    serializer_class = AnomalySerializer

    queryset = Anomaly.objects.none()  # what the schema describes; the real one needs the incident

    @extend_schema(parameters=[IncidentAnomaliesQuerySerializer])
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        incident = generics.get_object_or_404(Incident.objects.opened(), pk=self.kwargs["pk"])
        query = IncidentAnomaliesQuerySerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        rows = Anomaly.objects.filter(incident=incident).select_related("sensor", "false_positive_by")
        return rows.order_by(*IncidentAnomaliesQuerySerializer.ORDERS[query.validated_data["order"]])


class IncidentTimelineView(APIView):
    """GET /api/incidents/{id}/timeline/: its hosts' stored packets per bucket over its duration."""

    required_permissions = {"GET": "detection.view_incident"}

    @extend_schema(
        parameters=[TimelineQuerySerializer],
        responses={
            200: TimelineSerializer,
            400: OpenApiResponse(description="buckets is not a whole number from 1 to 500"),
            404: OpenApiResponse(description="no such incident"),
        },
    )
    def get(self, request: Request, pk: int) -> Response:
        incident = generics.get_object_or_404(Incident.objects.opened(), pk=pk)
        query = TimelineQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(timeline.incident_timeline(incident, query.validated_data["buckets"]))
        return Anomaly.objects.filter(incident=incident).select_related("sensor", "false_positive_by")


class IncidentPcapView(APIView):
    """GET /api/incidents/{id}/pcap: the frames of its packets still kept by capture, as a classic pcap."""

    required_permissions = {"GET": "capture.download_evidence"}

    @extend_schema(responses={**PCAP_RESPONSES, 404: OpenApiResponse(description="no such incident")})
    def get(self, request: Request, pk: int):
        incident = generics.get_object_or_404(Incident.objects.opened().select_related("sensor"), pk=pk)
        try:
            selection = evidence.incident_pcap(incident)
        except capture_evidence.EvidenceGone as exc:
            return gone_response(exc)
        return pcap_response(selection, f"netmon-incident-{incident.pk}.pcap")


_INVALID_RULE = OpenApiResponse(
    description='the rule is refused: {"detail": "invalid suppression rule", "fields": {field: message}}, '
    "each message naming what is allowed"
)


def _refused(errors: dict[str, str]) -> Response:
    body = {"detail": "invalid suppression rule", "fields": errors}
    return Response(body, status=status.HTTP_400_BAD_REQUEST)


class SuppressionListView(generics.ListAPIView):
    """GET /api/suppressions/: newest first, each with ``active``; POST: a new rule (201)."""

    required_permissions = {"GET": "detection.view_suppressionrule", "POST": "detection.add_suppressionrule"}
    serializer_class = SuppressionRuleSerializer
    queryset = SuppressionRule.objects.select_related("created_by")

    @extend_schema(
        request=SuppressionRuleRequestSerializer,
        responses={201: SuppressionRuleSerializer, 400: _INVALID_RULE},
    )
    def post(self, request: Request) -> Response:
        try:
            rule = suppression.create_rule(request.data, request.user)
        except suppression.InvalidRule as exc:
            return _refused(exc.errors)
        return Response(SuppressionRuleSerializer(rule).data, status=status.HTTP_201_CREATED)


class SuppressionDetailView(generics.RetrieveDestroyAPIView):
    """GET one rule; DELETE it (its suppressed anomalies stay stored, without the rule)."""

    required_permissions = {
        "GET": "detection.view_suppressionrule",
        "DELETE": "detection.delete_suppressionrule",
    }
    serializer_class = SuppressionRuleSerializer
    queryset = SuppressionRule.objects.select_related("created_by")


class IncidentSuppressView(APIView):
    """POST /api/incidents/{id}/suppress/: one click, a rule suppressing incidents like this one."""

    required_permissions = {"POST": "detection.add_suppressionrule"}

    @extend_schema(
        request=SuppressFromIncidentSerializer,
        responses={201: SuppressionRuleSerializer, 400: _INVALID_RULE},
        description="Source: the incident's single source (/32 or /128); target: its first target's host; "
        "port: that target's port when the kind is aimed at one service; kind: its kind. Optional body: "
        '``reason`` (default "suppressed from incident #N") and ``expires_at`` (null: never; absent: '
        "NETMON_SUPPRESSION_DEFAULT_HOURS from now, default 24 h).",
    )
    def post(self, request: Request, pk: int) -> Response:
        incident = generics.get_object_or_404(Incident, pk=pk)
        body = SuppressFromIncidentSerializer(data=request.data)
        if not body.is_valid():
            return _refused(flat_errors(body.errors))
        options = body.validated_data
        try:
            rule = suppression.rule_from_incident(
                incident, request.user, options.get("reason"), options.get("expires_at", suppression.DEFAULT)
            )
        except suppression.InvalidRule as exc:
            return _refused(exc.errors)
        return Response(SuppressionRuleSerializer(rule).data, status=status.HTTP_201_CREATED)
