"""Serializers for notification destinations and deliveries (responses; the destination's request
contract is ``alerts.validation.DestinationRequestSerializer``, shared with the services).

A destination's URL holds the service's secrets (tokens, passwords): it is answered redacted, as the
validator's messages and the admin's list show it, even to admins, who send a whole new URL to
change it. A delivery's ``error`` is what apprise said (it names hosts, not secrets).
"""

from __future__ import annotations

from rest_framework import serializers

from alerts.models import Delivery, Destination


class DestinationSerializer(serializers.ModelSerializer):
    url = serializers.CharField(
        source="redacted_url", read_only=True, help_text="the apprise URL with its secrets hidden"
    )

    class Meta:
        model = Destination
        fields = ["id", "name", "url", "min_severity", "enabled", "from_settings", "created_at"]
        read_only_fields = fields


class DeliverySerializer(serializers.ModelSerializer):
    destination_name = serializers.CharField(source="destination.name", read_only=True)

    class Meta:
        model = Delivery
        fields = [
            "id",
            "destination",
            "destination_name",
            "incident",
            "severity",
            "event",
            "status",
            "attempts",
            "error",
            "reported",
            "created_at",
            "updated_at",
            "sent_at",
        ]
        read_only_fields = fields
