"""Detection API: anomalies (list, mark false positive), model versions (list, activate, train)."""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from capture import services as capture_services
from detection import services, tasks
from detection.api.filters import AnomalyFilter
from detection.api.serializers import AnomalySerializer, DetectionModelSerializer, TrainRequestSerializer
from detection.models import Anomaly, DetectionModel


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
