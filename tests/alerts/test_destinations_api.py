"""The notifications API: destinations (admin role; a URL apprise cannot parse is a 400 naming it,
secrets hidden in answers; NETMON_NOTIFY_URLS's rows read-only) and deliveries (read-only, filtered)."""

from __future__ import annotations

import pytest

from alerts import services
from alerts.models import Delivery, Destination
from capture.choices import IncidentSeverity

pytestmark = pytest.mark.django_db

URL = "/api/notifications/destinations/"
SECRET_URL = "mailto://ops:hunter2@127.0.0.1:2525?to=ops@example.com&from=netmon@example.com"


@pytest.fixture(autouse=True)
def no_settings_urls(settings):
    settings.NETMON_NOTIFY_URLS = ""


def test_an_admin_adds_lists_changes_and_removes_a_destination_with_its_secrets_hidden(admin_api):
    made = admin_api.post(URL, {"name": "ops mail", "url": SECRET_URL, "min_severity": "high"}, format="json")
    assert made.status_code == 201, made.content
    body = made.json()
    assert body["name"] == "ops mail" and body["min_severity"] == "high" and body["enabled"] is True
    assert not body["from_settings"]
    row = Destination.objects.get()
    assert row.url == SECRET_URL  # stored whole, answered redacted
    listed = admin_api.get(URL)
    assert "hunter2" not in made.content.decode() + listed.content.decode()
    assert listed.json()["results"][0]["url"] == row.redacted_url

    changed = admin_api.patch(f"{URL}{row.pk}/", {"enabled": False, "min_severity": "low"}, format="json")
    assert changed.status_code == 200, changed.content
    row.refresh_from_db()
    assert (row.enabled, row.min_severity, row.url) == (False, "low", SECRET_URL)

    assert admin_api.delete(f"{URL}{row.pk}/").status_code == 204
    assert not Destination.objects.exists()


@pytest.mark.parametrize(
    "url, named",
    [
        ("nosuchservice://host/path", "no apprise service has the scheme 'nosuchservice'"),
        ("slack://only-one-token", "its parameters are invalid"),
        ("hooks.example.org/notify", "is not an apprise URL"),
    ],
)
def test_a_url_apprise_cannot_parse_is_a_400_naming_the_url_field_and_the_url(admin_api, url, named):
    answer = admin_api.post(URL, {"name": "chat", "url": url}, format="json")
    assert answer.status_code == 400, answer.content
    message = answer.json()["fields"]["url"]
    assert named in message and url.split("?")[0][:12] in message
    assert not Destination.objects.exists()


def test_a_bad_url_in_a_change_is_refused_with_its_secrets_hidden(admin_api):
    row = Destination.objects.create(name="hook", url="json://127.0.0.1:9/hook")
    bad = "mailto://ops:hunter2@127.0.0.1?smtp=mail.example.org&to=not-an-address&mode=zzz"
    answer = admin_api.patch(f"{URL}{row.pk}/", {"url": bad}, format="json")
    assert answer.status_code == 400, answer.content
    assert "mailto://ops:***@127.0.0.1" in answer.json()["fields"]["url"]
    assert "hunter2" not in answer.content.decode()
    row.refresh_from_db()
    assert row.url == "json://127.0.0.1:9/hook"


def test_every_field_is_checked_and_each_refusal_names_its_field(admin_api):
    Destination.objects.create(name="taken", url="json://127.0.0.1:9/hook")
    answer = admin_api.post(
        URL,
        {"name": "taken", "url": "json://127.0.0.1:9/x", "min_severity": "urgent", "enabled": "yes", "to": 1},
        format="json",
    )
    assert answer.status_code == 400, answer.content
    fields = answer.json()["fields"]
    assert fields["min_severity"] == f"'urgent' is not one of: {', '.join(IncidentSeverity.values)}"
    assert "true or false" in fields["enabled"]
    assert fields["to"].startswith("unknown field; known: name, url, min_severity, enabled")
    assert set(fields) == {"min_severity", "enabled", "to"}  # the name is checked once the rest is valid
    answer = admin_api.post(URL, {"name": "taken", "url": "json://127.0.0.1:9/x"}, format="json")
    assert answer.json()["fields"] == {"name": "a destination named 'taken' exists already"}
    answer = admin_api.post(URL, {"url": "json://127.0.0.1:9/x"}, format="json")
    assert set(answer.json()["fields"]) == {"name"}
    answer = admin_api.post(URL, {"name": "NETMON_NOTIFY_URLS json x", "url": "json://h"}, format="json")
    assert "kept for the destinations of that variable" in answer.json()["fields"]["name"]
    assert Destination.objects.count() == 1


def test_destinations_of_netmon_notify_urls_are_read_only_with_the_reason(admin_api, settings):
    services.sync_settings_destinations("json://127.0.0.1:9/from-env", "medium")
    row = Destination.objects.get(from_settings=True)
    for answer in (
        admin_api.patch(f"{URL}{row.pk}/", {"enabled": False}, format="json"),
        admin_api.delete(f"{URL}{row.pk}/"),
    ):
        assert answer.status_code == 409, answer.content
        assert "comes from NETMON_NOTIFY_URLS" in answer.json()["detail"]
    row.refresh_from_db()
    assert row.enabled and admin_api.get(f"{URL}{row.pk}/").json()["from_settings"] is True


@pytest.mark.parametrize("who", ["viewer_api", "api", "nogroup_api"])
def test_other_roles_are_refused_with_the_permission_they_lack(request, who):
    client = request.getfixturevalue(who)
    row = Destination.objects.create(name="hook", url="json://127.0.0.1:9/hook")
    expected = {
        ("get", URL): "alerts.view_destination",
        ("post", URL): "alerts.add_destination",
        ("get", f"{URL}{row.pk}/"): "alerts.view_destination",
        ("patch", f"{URL}{row.pk}/"): "alerts.change_destination",
        ("delete", f"{URL}{row.pk}/"): "alerts.delete_destination",
        ("get", "/api/notifications/deliveries/"): "alerts.view_delivery",
    }
    for (method, url), permission in expected.items():
        answer = getattr(client, method)(url, {"name": "x", "url": "json://h"}, format="json")
        assert answer.status_code == 403, (method, url, answer.content)
        detail = answer.json()["detail"]
        assert detail == f"permission denied: this needs the permission {permission}" or (
            who == "nogroup_api" and detail.startswith("your account has no role yet")
        ), detail
    assert Destination.objects.get().enabled


def test_deliveries_are_listed_and_filtered_by_incident_and_status(admin_api, make_incident):
    hook = Destination.objects.create(name="hook", url="json://127.0.0.1:9/hook")
    first, second = make_incident(), make_incident(severity=IncidentSeverity.HIGH)
    for incident, severity, status in ((first, "medium", "sent"), (second, "high", "failed")):
        Delivery.objects.create(
            destination=hook, incident=incident, severity=severity, event="opened", status=status
        )
    everything = admin_api.get("/api/notifications/deliveries/").json()
    assert everything["count"] == 2
    by_incident = admin_api.get(f"/api/notifications/deliveries/?incident={first.pk}").json()["results"]
    assert [(d["incident"], d["status"], d["destination_name"]) for d in by_incident] == [
        (first.pk, "sent", "hook")
    ]
    failed = admin_api.get("/api/notifications/deliveries/?status=failed").json()["results"]
    assert [d["incident"] for d in failed] == [second.pk]
    assert admin_api.get("/api/notifications/deliveries/?incident=0").json()["count"] == 0


@pytest.mark.parametrize(
    "query, field, says",
    [
        ("status=lost", "status", "allowed: pending, sending, retrying, sent, failed, rate_limited"),
        ("incident=abc", "incident", "whole number"),
        ("destination=1.5", "destination", "whole number"),
    ],
)
def test_a_bad_delivery_filter_is_a_400_naming_it(admin_api, query, field, says):
    answer = admin_api.get(f"/api/notifications/deliveries/?{query}")
    assert answer.status_code == 400, answer.content
    assert says in " ".join(answer.json()[field])


def test_a_test_message_is_queued_after_commit_and_arrives(
    admin_api, viewer_api, receiver, django_capture_on_commit_callbacks
):
    from alerts import tasks

    hook = Destination.objects.create(name="hook", url=receiver.url, min_severity="high")
    assert viewer_api.post(f"{URL}{hook.pk}/test/").status_code == 403
    assert admin_api.post(f"{URL}999999/test/").status_code == 404
    with django_capture_on_commit_callbacks() as queued:
        answer = admin_api.post(f"{URL}{hook.pk}/test/")
    assert answer.status_code == 202 and "queued" in answer.json()["detail"]
    assert len(queued) == 1 and receiver.received == []  # queued, not sent by the web process

    assert tasks.send_test_message(hook.pk) == "sent"  # what the notify worker runs
    assert [m["title"] for m in receiver.received] == ["Netmon: test message to hook"]
    assert "severity high and above" in receiver.received[0]["message"]
    assert not Delivery.objects.exists()
    assert tasks.send_test_message(999999) == "missing"


def test_header_and_payload_values_are_hidden_too(admin_api):
    # apprise's privacy form leaves custom headers (+X-Api-Key=, -X-Token=) and payload fields
    # (:field=) as they are: a webhook's key would be answered to every admin and shown in the admin
    url = "json://hooks.example.org/netmon?+X-Api-Key=k3y-value&-X-Token=t0ken-value&:extra=f1eld-value"
    made = admin_api.post(URL, {"name": "webhook", "url": url}, format="json")
    assert made.status_code == 201, made.content
    answered = made.content.decode() + admin_api.get(URL).content.decode()
    for secret in ("k3y-value", "t0ken-value", "f1eld-value"):
        assert secret not in answered
    assert "hooks.example.org/netmon" in made.json()["url"]  # still tells which destination it is
    assert Destination.objects.get().url == url  # stored whole: sending needs it
