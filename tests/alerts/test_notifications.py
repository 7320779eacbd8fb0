"""Notifications: what arrives at a real HTTP receiver and a real SMTP server, once per incident and
severity, within each destination's rate; failures retried, recorded and counted, never raised; an
apprise URL that cannot be parsed refused wherever it is given."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from alerts import services
from alerts.apps import AlertsConfig
from alerts.models import Delivery, Destination
from alerts.validation import split_urls, url_problem
from capture.choices import IncidentSeverity, IncidentStatus
from detection.models import Incident

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def notify_settings(settings):
    settings.NETMON_NOTIFY_URLS = ""
    settings.NETMON_NOTIFY_RATE_PER_MINUTE = 10
    settings.NETMON_NOTIFY_ATTEMPTS = 3
    settings.NETMON_NOTIFY_BACKOFF = 2.0
    settings.NETMON_NOTIFY_TIMEOUT = 5.0
    settings.NETMON_PUBLIC_URL = "https://netmon.example.org"
    return settings


def send_all(incident_ids: list[int]) -> list[services.Outcome]:
    """What the two tasks do, in this process: plan, then one attempt at each planned delivery."""
    return [services.deliver(pk) for pk in services.plan_deliveries(incident_ids)]


def test_an_opened_incident_arrives_at_a_json_receiver_saying_what_happened(receiver, make_incident):
    Destination.objects.create(name="hook", url=receiver.url)
    incident = make_incident(IncidentSeverity.HIGH)

    outcomes = send_all([incident.pk])

    assert [o.status for o in outcomes] == [Delivery.Status.SENT]
    [message] = receiver.received
    assert message["title"] == "Netmon: high Port Scan (opened) on edge"
    assert message["type"] == "failure"  # apprise's type for a high severity
    assert message["message"].splitlines() == [
        "Port Scan, severity high (opened)",
        "10.0.0.9 → 10.0.0.1:22/tcp, 10.0.0.1:80/tcp",
        "10.0.0.9 probed 40 ports of 10.0.0.1 in 5 s",
        f"https://netmon.example.org/incidents/{incident.pk}/",
    ]
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.event, delivery.error) == ("sent", 1, "opened", "")


def test_an_incident_arrives_by_mail_at_a_local_smtp_server(smtp_server, make_incident):
    Destination.objects.create(name="mail", url=smtp_server.url)
    incident = make_incident(
        IncidentSeverity.MEDIUM, targets=[f"10.0.1.{i}" for i in range(8)], targets_more=4
    )

    send_all([incident.pk])

    [mail] = smtp_server.messages
    assert mail["Subject"] == "Netmon: medium Port Scan (opened) on edge"
    assert mail["To"] == "ops@example.com"
    text = mail.get_body(("plain",)).get_content()
    assert "10.0.0.9 → 10.0.1.0, 10.0.1.1, 10.0.1.2, 10.0.1.3, 10.0.1.4 and 7 more" in text
    assert f"https://netmon.example.org/incidents/{incident.pk}/" in text


def test_each_incident_and_severity_is_sent_once_and_a_rise_is_sent_again(receiver, make_incident):
    Destination.objects.create(name="hook", url=receiver.url)
    incident = make_incident(IncidentSeverity.LOW)
    send_all([incident.pk])
    # a retried or re-run task: planned already, sent already
    assert services.plan_deliveries([incident.pk]) == []
    first = Delivery.objects.get()
    assert services.deliver(first.pk).status == Delivery.Status.SENT
    assert len(receiver.received) == 1

    Incident.objects.filter(pk=incident.pk).update(severity=IncidentSeverity.HIGH)
    send_all([incident.pk])
    Incident.objects.filter(pk=incident.pk).update(severity=IncidentSeverity.MEDIUM)  # lower: no news
    send_all([incident.pk])

    assert [m["title"] for m in receiver.received] == [
        "Netmon: low Port Scan (opened) on edge",
        "Netmon: high Port Scan (severity rose) on edge",
    ]
    assert sorted(Delivery.objects.values_list("severity", "event")) == [
        ("high", "raised"),
        ("low", "opened"),
    ]


def test_candidates_false_positives_disabled_and_too_mild_destinations_get_nothing(receiver, make_incident):
    Destination.objects.create(name="high only", url=receiver.url, min_severity=IncidentSeverity.HIGH)
    Destination.objects.create(name="off", url=receiver.url, enabled=False)
    candidate = make_incident(IncidentSeverity.HIGH, opened=False)
    dismissed = make_incident(IncidentSeverity.HIGH, status=IncidentStatus.FALSE_POSITIVE)
    medium = make_incident(IncidentSeverity.MEDIUM)

    assert services.plan_deliveries([candidate.pk, dismissed.pk, medium.pk]) == []
    high = make_incident(IncidentSeverity.HIGH)
    send_all([high.pk])
    assert [m["title"] for m in receiver.received] == ["Netmon: high Port Scan (opened) on edge"]
    assert Delivery.objects.get().destination.name == "high only"


def test_over_the_rate_limit_messages_are_dropped_counted_and_summed_up_in_the_next(
    receiver, make_incident, notify_settings, staff_client
):
    notify_settings.NETMON_NOTIFY_RATE_PER_MINUTE = 2
    hook = Destination.objects.create(name="hook", url=receiver.url)
    flood = [make_incident(IncidentSeverity.MEDIUM) for _ in range(5)]

    send_all([i.pk for i in flood])

    assert len(receiver.received) == 2
    statuses = sorted(Delivery.objects.values_list("status", flat=True))
    assert statuses == ["rate_limited"] * 3 + ["sent"] * 2
    metrics = staff_client.get("/metrics").content.decode()
    assert 'netmon_notifications{destination="hook",status="rate_limited"} 3.0' in metrics
    assert 'netmon_notifications{destination="hook",status="sent"} 2.0' in metrics
    held = "3 other notification(s) to this destination were held back by the rate limit since"
    assert [held in m["message"] for m in receiver.received] == [True, False]  # told once
    # a minute later the window has room again
    Delivery.objects.filter(destination=hook).update(created_at=timezone.now() - timedelta(minutes=2))
    send_all([make_incident(IncidentSeverity.MEDIUM).pk])
    assert len(receiver.received) == 3 and "held back" not in receiver.received[-1]["message"]


def test_an_unreachable_destination_is_retried_with_backoff_recorded_and_counted(make_incident, staff_client):
    from tests.alerts.conftest import free_port

    Destination.objects.create(name="down", url=f"json://127.0.0.1:{free_port()}/hook")
    incident = make_incident(IncidentSeverity.HIGH)

    [first] = send_all([incident.pk])  # no exception: the failure is the delivery's
    delivery = Delivery.objects.get()
    assert (first.status, first.attempts, first.retry_in) == ("retrying", 1, 2.0)
    assert "Connection error" in delivery.error
    second = services.deliver(delivery.pk)
    third = services.deliver(delivery.pk)
    assert (second.status, second.retry_in, third.status, third.retry_in) == ("retrying", 4.0, "failed", None)
    assert services.deliver(delivery.pk).attempts == 3  # done: a redelivered task sends nothing more

    metrics = staff_client.get("/metrics").content.decode()
    assert 'netmon_notifications{destination="down",status="failed"} 1.0' in metrics
    assert 'netmon_notification_failed_attempts_total{destination="down"} 3.0' in metrics
    page = staff_client.get("/admin/alerts/delivery/").content.decode()
    assert "failed" in page and "Connection error" in page


def test_a_receiver_failing_once_gets_the_message_on_the_retry(receiver, make_incident):
    Destination.objects.create(name="hook", url=receiver.url)
    receiver.fail = 1
    [first] = send_all([make_incident().pk])
    assert first.status == "retrying" and receiver.received == []
    again = services.deliver(Delivery.objects.get().pk)
    assert (again.status, again.attempts, len(receiver.received)) == ("sent", 2, 1)
    assert Delivery.objects.get().error == ""


@pytest.mark.parametrize(
    "url, named",
    [
        ("nosuchservice://host/path", "no apprise service has the scheme 'nosuchservice'"),
        ("slack://only-one-token", "its parameters are invalid"),
        ("hooks.example.org/notify", "is not an apprise URL"),
    ],
)
def test_a_url_apprise_cannot_parse_is_refused_naming_it(url, named):
    problem = url_problem(url)
    assert problem is not None and named in problem and url.split("?")[0][:12] in problem


def test_the_admin_form_refuses_a_bad_url_with_the_validators_message(staff_client):
    answer = staff_client.post(
        "/admin/alerts/destination/add/",
        {"name": "chat", "url": "nosuchservice://host/path", "min_severity": "low", "enabled": "on"},
    )
    assert answer.status_code == 200  # the form again, with the error
    assert "no apprise service has the scheme &#x27;nosuchservice&#x27;" in answer.content.decode()
    assert not Destination.objects.exists()
    answer = staff_client.post(
        "/admin/alerts/destination/add/",
        {"name": "hook", "url": "json://127.0.0.1:9/hook", "min_severity": "high", "enabled": "on"},
    )
    assert answer.status_code == 302 and Destination.objects.get().min_severity == "high"


def test_netmon_notify_urls_warns_at_start_up_and_becomes_destinations(
    notify_settings, caplog, receiver, staff_client
):
    notify_settings.NETMON_NOTIFY_URLS = (
        f"{receiver.url}, nosuchservice://x mailto://mail.example.org?to=a@x.org,b@x.org&from=n@x.org"
    )
    assert split_urls(notify_settings.NETMON_NOTIFY_URLS) == [
        receiver.url,
        "nosuchservice://x",
        "mailto://mail.example.org?to=a@x.org,b@x.org&from=n@x.org",
    ]
    with caplog.at_level(logging.WARNING, logger="alerts"):
        AlertsConfig.ready(AlertsConfig.create("alerts"))
    assert [r.getMessage() for r in caplog.records] == [
        "NETMON_NOTIFY_URLS: apprise cannot parse the destination URL 'nosuchservice://x': "
        "no apprise service has the scheme 'nosuchservice'; it is skipped"
    ]
    services.sync_settings_destinations()
    assert Destination.objects.filter(from_settings=True, enabled=True).count() == 2
    mail = Destination.objects.get(url__startswith="mailto:")
    page = staff_client.get(f"/admin/alerts/destination/{mail.pk}/change/").content.decode()
    assert "mail.example.org" in page and "NETMON_NOTIFY_URLS mailto" in page  # read-only there
    notify_settings.NETMON_NOTIFY_URLS = receiver.url
    services.sync_settings_destinations()
    assert [d.url for d in Destination.objects.filter(enabled=True)] == [receiver.url]


def test_the_sweep_sends_news_that_was_lost_once_and_nothing_else(receiver, make_incident):
    now = timezone.now()
    hook = Destination.objects.create(name="hook", url=receiver.url)
    Destination.objects.filter(pk=hook.pk).update(created_at=now - timedelta(hours=3))
    lost = make_incident(IncidentSeverity.MEDIUM, opened_at=now - timedelta(minutes=10))
    told = make_incident(IncidentSeverity.MEDIUM, opened_at=now - timedelta(minutes=5))
    send_all([told.pk])  # the news of this one arrived
    make_incident(IncidentSeverity.HIGH, opened_at=now - timedelta(hours=2))  # too old to sweep
    make_incident(IncidentSeverity.HIGH, opened=False)  # a candidate: never announced
    # made after the incident opened: not sent the backlog
    Destination.objects.create(name="new", url=receiver.url)

    outcomes = [services.deliver(pk) for pk in services.sweep_unannounced(now)]

    assert [o.status for o in outcomes] == ["sent"]
    assert [m["message"].splitlines()[-1] for m in receiver.received] == [
        f"https://netmon.example.org/incidents/{told.pk}/",
        f"https://netmon.example.org/incidents/{lost.pk}/",
    ]
    assert services.sweep_unannounced(now) == []  # idempotent
    # a rise whose news was lost is swept too
    Incident.objects.filter(pk=told.pk).update(severity=IncidentSeverity.HIGH)
    for pk in services.sweep_unannounced(now):
        services.deliver(pk)
    assert receiver.received[-1]["title"] == "Netmon: high Port Scan (severity rose) on edge"


def test_the_sweep_sends_a_lost_rise_of_an_incident_opened_hours_ago(receiver, make_incident):
    now = timezone.now()
    hook = Destination.objects.create(name="hook", url=receiver.url)
    Destination.objects.filter(pk=hook.pk).update(created_at=now - timedelta(hours=4))
    long_running = make_incident(IncidentSeverity.MEDIUM, opened_at=now - timedelta(hours=3))
    send_all([long_running.pk])  # its opening was told
    # it keeps growing and rises now; that news is lost between the commit and the queue
    Incident.objects.filter(pk=long_running.pk).update(
        severity=IncidentSeverity.HIGH, last_seen=now - timedelta(seconds=30)
    )

    for pk in services.sweep_unannounced(now):
        services.deliver(pk)

    assert [m["title"] for m in receiver.received] == [
        "Netmon: medium Port Scan (opened) on edge",
        "Netmon: high Port Scan (severity rose) on edge",
    ]


def test_the_notify_task_also_sweeps_and_beat_runs_the_sweep(receiver, make_incident, settings):
    from alerts import tasks

    now = timezone.now()
    hook = Destination.objects.create(name="hook", url=receiver.url)
    Destination.objects.filter(pk=hook.pk).update(created_at=now - timedelta(hours=1))
    lost = make_incident(IncidentSeverity.MEDIUM, opened_at=now - timedelta(minutes=10))
    news = make_incident(IncidentSeverity.MEDIUM, opened_at=now)

    assert tasks.notify_incidents([news.pk]) == 2
    assert set(Delivery.objects.values_list("incident_id", flat=True)) == {lost.pk, news.pk}
    schedule = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "alerts.sweep_notifications" in schedule and tasks.sweep_notifications() == 0
