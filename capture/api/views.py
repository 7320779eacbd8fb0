"""Capture's API views: configuration, interfaces, packets, flows (they orchestrate; services decide)."""

from __future__ import annotations

from django.conf import settings
from django.http import StreamingHttpResponse
from django_filters.utils import translate_validation
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from capture import evidence, host, services, talkers
from capture.api.filters import FlowFilter, PacketFilter, TalkerFilter
from capture.api.serializers import (
    ConfigChangeSerializer,
    ConfigOptionsSerializer,
    ConfigUpdateSerializer,
    FlowSerializer,
    InterfaceSerializer,
    MonitorConfigSerializer,
    PacketSerializer,
    PcapQuerySerializer,
    TalkersSerializer,
)
from capture.models import ConfigChange, Flow, Packet


def config_error_response(exc: services.ConfigError) -> Response:
    return Response(
        {"detail": "invalid configuration", "fields": exc.errors}, status=status.HTTP_400_BAD_REQUEST
    )


class ConfigView(APIView):
    """GET the active configuration and each key's options; POST a partial update (bad keys, values: 400)."""

    # One contract: ConfigUpdateSerializer decides the POST body (services.update_config runs it),
    # is its schema here, and is what GET's ``options`` describes.
    required_permissions = {"GET": "capture.view_monitorconfig", "POST": "capture.change_monitorconfig"}

    @extend_schema(responses=ConfigOptionsSerializer)
    def get(self, request: Request) -> Response:
        return Response(ConfigOptionsSerializer(services.get_config()).data)

    @extend_schema(request=ConfigUpdateSerializer, responses={200: MonitorConfigSerializer})
    def post(self, request: Request) -> Response:
        try:
            config, change = services.update_config(request.data, user=request.user, source="api")
        except services.ConfigError as exc:
            return config_error_response(exc)
        if change is not None:
            services.announce_config(config)
        return Response(MonitorConfigSerializer(config).data)


class ConfigHistoryView(APIView):
    """GET the most recent configuration changes (who, when, old and new values)."""

    required_permissions = {"GET": "capture.view_configchange"}

    @extend_schema(responses=ConfigChangeSerializer(many=True))
    def get(self, request: Request) -> Response:
        changes = ConfigChange.objects.select_related("user")[:100]
        return Response(ConfigChangeSerializer(changes, many=True).data)


class InterfacesView(APIView):
    """GET the host's capture interfaces (from dumpcap -D), plus the 'demo' pseudo-interface."""

    required_permissions = {"GET": "capture.view_monitorconfig"}  # what the configuration may name

    @extend_schema(
        responses={
            200: InterfaceSerializer(many=True),
            503: OpenApiResponse(description="dumpcap is missing: the detail says what to install"),
        }
    )
    def get(self, request: Request) -> Response:
        try:
            interfaces = host.list_interfaces()
        except host.ToolMissing as exc:
            return Response(
                {
                    "detail": str(exc),
                    "interfaces": [{"name": host.DEMO_INTERFACE, "description": "simulated traffic"}],
                },
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        interfaces.append({"name": host.DEMO_INTERFACE, "description": "simulated traffic"})
        return Response(InterfaceSerializer(interfaces, many=True).data)


class PacketListView(generics.ListAPIView):
    """GET /api/packets/: stored packets, newest first, filtered and paginated."""

    required_permissions = {"GET": "capture.view_packet"}
    serializer_class = PacketSerializer
    filterset_class = PacketFilter
    queryset = Packet.objects.select_related("sensor")


class FlowListView(generics.ListAPIView):
    """GET /api/flows/: flows (5-tuple aggregates), most recently seen first, filtered and paginated."""

    required_permissions = {"GET": "capture.view_flow"}
    serializer_class = FlowSerializer
    filterset_class = FlowFilter
    queryset = Flow.objects.select_related("sensor")


class TalkerListView(generics.GenericAPIView):
    """GET /api/talkers: top talkers (bytes sent per source) in a window, with country and AS.

    ``?country=``, ``?asn=`` and ``?asn_name=`` keep the talkers whose address matches.
    """

    required_permissions = {"GET": "capture.view_packet"}  # talkers are sums of packets
    serializer_class = TalkersSerializer
    filterset_class = TalkerFilter
    queryset = Packet.objects.all()
    pagination_class = None

    def get(self, request: Request) -> Response:
        filterset = TalkerFilter(request.query_params, queryset=self.get_queryset(), request=request)
        if not filterset.is_valid():
            raise translate_validation(filterset.errors)
        data = filterset.form.cleaned_data
        result = talkers.top_talkers(
            filterset.qs,
            since=data.get("since"),
            until=data.get("until"),
            criteria=filterset.geo_criteria(),
            limit=data.get("limit") or 10,
        )
        return Response(TalkersSerializer(result).data)


# --- evidence pcap -------------------------------------------------------------------------------
PCAP_MEDIA_TYPE = "application/vnd.tcpdump.pcap"


def pcap_response(selection: evidence.Selection, filename: str) -> StreamingHttpResponse:
    """The carved pcap, streamed; headers say how many frames it holds and how many were left out."""
    response = StreamingHttpResponse(selection.iter_pcap(), content_type=PCAP_MEDIA_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["X-Netmon-Frames"] = str(selection.frames)
    if selection.other_linktype:
        response["X-Netmon-Frames-Other-Link-Type"] = str(selection.other_linktype)
    return response


def gone_response(exc: evidence.EvidenceGone) -> Response:
    """410: the frames are not (or no longer) kept, and why."""
    return Response({"detail": str(exc)}, status=status.HTTP_410_GONE)


PCAP_RESPONSES = {
    (200, PCAP_MEDIA_TYPE): OpenApiTypes.BINARY,
    400: OpenApiResponse(description="a bad parameter: the answer names it and what is allowed"),
    410: OpenApiResponse(description="the frames have aged out of the evidence ring, or were never kept"),
}


class PacketPcapView(APIView):
    """GET /api/packets/pcap: the kept frames matching since/until/ip/port, as a classic pcap."""

    required_permissions = {"GET": "capture.download_evidence"}

    @extend_schema(parameters=[PcapQuerySerializer], responses=PCAP_RESPONSES)
    def get(self, request: Request) -> StreamingHttpResponse | Response:
        # an empty parameter is no criterion, as in the packet list's filters
        query = PcapQuerySerializer(data={k: v for k, v in request.query_params.items() if v != ""})
        if not query.is_valid():  # the reason in "detail" too, like the 410s and the sensor's 400
            field, messages = next(iter(query.errors.items()))
            reason = f"{field}: {messages[0]}" if field != "non_field_errors" else str(messages[0])
            return Response({"detail": reason, **query.errors}, status=status.HTTP_400_BAD_REQUEST)
        q = query.validated_data
        directory = settings.NETMON_EVIDENCE_DIR
        try:
            sensor = evidence.resolve_sensor(directory, q.get("sensor"))
            selection = evidence.select(
                directory,
                sensor,
                since=q["since"].timestamp() if "since" in q else None,
                until=q["until"].timestamp() if "until" in q else None,
                ip=q.get("ip"),
                port=q.get("port"),
            )
        except ValueError as exc:  # which sensor: several keep evidence, or a name that cannot be one
            return Response({"detail": str(exc), "sensor": [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
        except evidence.EvidenceGone as exc:
            return gone_response(exc)
        return pcap_response(selection, f"netmon-{sensor}-packets.pcap")
