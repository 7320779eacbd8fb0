"""Notification API: destinations (list, create, read, change, delete; admin role) and the deliveries
made to them (read-only, filtered). Logic in ``alerts.services``; the request contract in
``alerts.validation``. Destinations of ``NETMON_NOTIFY_URLS`` are read-only here (409 with the reason)."""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from alerts import services, tasks
from alerts.api.filters import DeliveryFilter
from alerts.api.serializers import DeliverySerializer, DestinationSerializer
from alerts.models import Delivery, Destination
from alerts.validation import DestinationRequestSerializer

_INVALID = OpenApiResponse(
    description='the destination is refused: {"detail": "invalid notification destination", '
    '"fields": {field: message}}, each message naming what is allowed (a bad url: why apprise cannot '
    "parse it, the URL shown with its secrets hidden)"
)
_READ_ONLY = OpenApiResponse(
    description='{"detail": reason}: the destination comes from NETMON_NOTIFY_URLS; change the variable'
)


def _refused(exc: services.InvalidDestination) -> Response:
    body = {"detail": "invalid notification destination", "fields": exc.errors}
    return Response(body, status=status.HTTP_400_BAD_REQUEST)


def _read_only(exc: services.ReadOnlyDestination) -> Response:
    return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)


class DestinationListView(generics.ListAPIView):
    """GET /api/notifications/destinations/: every destination (URLs redacted); POST: a new one (201)."""

    required_permissions = {"GET": "alerts.view_destination", "POST": "alerts.add_destination"}
    serializer_class = DestinationSerializer
    queryset = Destination.objects.all()

    @extend_schema(
        request=DestinationRequestSerializer, responses={201: DestinationSerializer, 400: _INVALID}
    )
    def post(self, request: Request) -> Response:
        try:
            destination = services.create_destination(request.data)
        except services.InvalidDestination as exc:
            return _refused(exc)
        return Response(DestinationSerializer(destination).data, status=status.HTTP_201_CREATED)


class DestinationDetailView(generics.RetrieveAPIView):
    """GET one destination; PATCH some of its fields; DELETE it (with its deliveries). Those of
    NETMON_NOTIFY_URLS answer 409: the variable owns them."""

    required_permissions = {
        "GET": "alerts.view_destination",
        "PATCH": "alerts.change_destination",
        "DELETE": "alerts.delete_destination",
    }
    serializer_class = DestinationSerializer
    queryset = Destination.objects.all()
    http_method_names = ["get", "patch", "delete", "head", "options"]

    @extend_schema(
        request=DestinationRequestSerializer(partial=True),
        responses={200: DestinationSerializer, 400: _INVALID, 409: _READ_ONLY},
    )
    def patch(self, request: Request, pk: int) -> Response:
        try:
            destination = services.update_destination(self.get_object(), request.data)
        except services.ReadOnlyDestination as exc:
            return _read_only(exc)
        except services.InvalidDestination as exc:
            return _refused(exc)
        return Response(DestinationSerializer(destination).data)

    @extend_schema(responses={204: None, 409: _READ_ONLY})
    def delete(self, request: Request, pk: int) -> Response:
        try:
            services.delete_destination(self.get_object())
        except services.ReadOnlyDestination as exc:
            return _read_only(exc)
        return Response(status=status.HTTP_204_NO_CONTENT)


class DestinationTestView(APIView):
    """POST /api/notifications/destinations/{id}/test/: queue a test message to it (202)."""

    required_permissions = {"POST": "alerts.change_destination"}

    @extend_schema(
        request=None,
        responses={202: inline_serializer("TestMessageQueued", {"detail": serializers.CharField()})},
        description="The notify worker sends it (enabled or not, outside the rate limit) and logs the "
        "outcome; nothing is recorded as a delivery.",
    )
    def post(self, request: Request, pk: int) -> Response:
        destination = generics.get_object_or_404(Destination, pk=pk)
        transaction.on_commit(lambda: tasks.send_test_message.delay(destination.pk))
        detail = f"a test message to {destination.name} is queued; the notify worker logs how it went"
        return Response({"detail": detail}, status=status.HTTP_202_ACCEPTED)


class DeliveryListView(generics.ListAPIView):
    """GET /api/notifications/deliveries/: newest first; filter by incident, destination, status."""

    required_permissions = {"GET": "alerts.view_delivery"}
    serializer_class = DeliverySerializer
    filterset_class = DeliveryFilter
    queryset = Delivery.objects.select_related("destination")
