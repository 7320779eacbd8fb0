"""Suppression rules: the validator's refusals (each naming its field), the API (CRUD and one click
from an incident), who may do what, expiry, the matcher's semantics, hit counting and the admin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from capture.choices import IncidentKind
from capture.models import Sensor
from detection.models import Anomaly, Incident, SuppressionRule
from detection.suppression import RuleSet, record_hits, rule_from_incident

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 1, tzinfo=UTC)
URL = "/api/suppressions/"


def future(hours: float = 1) -> str:
    return (timezone.now() + timedelta(hours=hours)).isoformat()


@pytest.fixture
def sensor():
    return Sensor.objects.create(name="s1")


def make_incident(
    sensor, kind="brute_force", sources=("203.0.113.9",), targets=("10.0.0.5:22/tcp", "10.0.0.6")
):
    return Incident.objects.create(
        sensor=sensor, src_ip=sources[0] if sources else None, sources=list(sources), targets=list(targets),
        kind=kind, first_seen=T0, last_seen=T0,
    )  # fmt: skip


def rule(**fields) -> SuppressionRule:
    return SuppressionRule.objects.create(reason=fields.pop("reason", "known"), **fields)


# --- the validator: each refusal names its field and what is allowed ---------------------------------

REFUSALS = [
    ({"source_cidr": "10.0.0.300"}, "source_cidr", "is not an IPv4 or IPv6 network"),
    ({"source_cidr": "10.0.0.5/24"}, "source_cidr", "host bits set; did you mean 10.0.0.0/24"),
    ({"target_cidr": "2001:db8::/129"}, "target_cidr", "is not an IPv4 or IPv6 network"),
    ({"target_cidr": 17}, "target_cidr", "must be an IPv4 or IPv6 network"),
    ({"port": 65536}, "port", "from 0 to 65535"),
    ({"port": -1}, "port", "from 0 to 65535"),
    ({"port": "22"}, "port", "from 0 to 65535"),
    ({"port": True}, "port", "from 0 to 65535"),
    ({"kind": "ddos"}, "kind", "is not an incident kind; allowed: port_scan, horizontal_scan"),
    ({"kind": "", "port": 22}, "kind", "is not an incident kind"),
    ({"port": 22, "expires_at": "2020-01-01T00:00:00Z"}, "expires_at", "in the past"),
    ({"port": 22, "expires_at": "tomorrow"}, "expires_at", "ISO 8601"),
    ({"port": 22, "reason": ""}, "reason", "non-empty text"),
    ({"port": 22, "reason": "   "}, "reason", "non-empty text"),
    ({"port": 22, "reason": None}, "reason", "non-empty text"),
    ({"port": 22, "reason": "x" * 1001}, "reason", "at most 1000"),
    ({"reason": "known"}, "non_field_errors", "at least one of source_cidr, target_cidr, port, kind"),
    (
        {"port": None, "kind": None, "source_cidr": "", "reason": "known"},
        "non_field_errors",
        "at least one of",
    ),
    ({"port": 22, "color": "red"}, "color", "unknown field; known: source_cidr"),
]


@pytest.mark.parametrize(
    ("body", "field", "words"), REFUSALS, ids=[f"{r[1]}-{i}" for i, r in enumerate(REFUSALS)]
)
def test_the_validator_refuses_naming_the_field_and_what_is_allowed(api, body, field, words):
    body = {"reason": "known", **body}
    response = api.post(URL, body, format="json")

    assert response.status_code == 400, response.content
    fields = response.json()["fields"]
    assert field in fields and words in fields[field], fields
    assert not SuppressionRule.objects.exists()


def test_the_kind_refusal_lists_every_allowed_kind(api):
    message = api.post(URL, {"kind": "ddos", "reason": "x"}, format="json").json()["fields"]["kind"]
    assert all(kind in message for kind in IncidentKind.values)


def test_a_body_that_is_not_an_object_is_refused(api):
    response = api.post(URL, [1, 2], format="json")
    assert response.status_code == 400 and "non_field_errors" in response.json()["fields"]


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("10.0.0.5", "10.0.0.5/32"),
        ("10.0.0.0/24", "10.0.0.0/24"),
        ("2001:DB8::1", "2001:db8::1/128"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("::ffff:10.0.0.0/120", "10.0.0.0/24"),  # IPv4-mapped: the worker sees IPv4
    ],
)
def test_cidrs_are_stored_normalised(api, sent, stored):
    response = api.post(URL, {"source_cidr": sent, "reason": "known"}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["source_cidr"] == stored
    assert SuppressionRule.objects.get().source_cidr == stored


# --- the API ------------------------------------------------------------------------------------------


def test_create_list_detail_delete(api, user):
    made = api.post(
        URL, {"target_cidr": "10.0.0.5", "port": 0, "kind": "syn_flood", "reason": " backup job ",
              "expires_at": future(2)}, format="json",
    )  # fmt: skip
    assert made.status_code == 201, made.content
    row = made.json()
    assert row["target_cidr"] == "10.0.0.5/32" and row["port"] == 0 and row["kind"] == "syn_flood"
    assert row["source_cidr"] is None and row["reason"] == "backup job" and row["active"] is True
    assert row["created_by"] == user.username and row["hits"] == 0 and row["incident"] is None
    assert row["url"] == f"{URL}{row['id']}/"
    newer = api.post(
        URL, {"source_cidr": "192.0.2.0/24", "reason": "scanner", "expires_at": None}, format="json"
    )
    assert newer.status_code == 201 and newer.json()["expires_at"] is None

    listed = api.get(URL).json()
    assert listed["count"] == 2
    assert [r["id"] for r in listed["results"]] == [newer.json()["id"], row["id"]]  # newest first
    assert [r["id"] for r in api.get(f"{URL}?limit=1&offset=1").json()["results"]] == [row["id"]]
    assert api.get(f"{URL}?limit=0").status_code == 400
    assert api.get(row["url"]).json() == row

    assert api.delete(row["url"]).status_code == 204
    assert api.get(row["url"]).status_code == 404
    assert api.get(URL).json()["count"] == 1


def test_deleting_a_rule_keeps_the_anomalies_it_suppressed(api, sensor):
    made = rule(port=22)
    anomaly = Anomaly.objects.create(
        sensor=sensor, packet_seq=1, ts=T0, score=0.9, threshold=0.5, model_kind="both", explanation="x",
        suppressed_by=made,
    )  # fmt: skip
    assert api.get(f"/api/anomalies/{anomaly.pk}/").json()["suppressed_by"] == made.pk

    assert api.delete(f"{URL}{made.pk}/").status_code == 204

    anomaly.refresh_from_db()
    assert anomaly.suppressed_by is None


def test_one_click_from_a_service_directed_incident(api, user, sensor):
    incident = make_incident(sensor, kind="brute_force")
    before = timezone.now()

    response = api.post(f"/api/incidents/{incident.pk}/suppress/", format="json")

    assert response.status_code == 201, response.content
    row = response.json()
    assert (row["source_cidr"], row["target_cidr"], row["port"], row["kind"]) == (
        "203.0.113.9/32", "10.0.0.5/32", 22, "brute_force",
    )  # fmt: skip
    assert row["reason"] == f"suppressed from incident #{incident.pk}"
    assert row["incident"] == incident.pk and row["created_by"] == user.username
    expires = datetime.fromisoformat(row["expires_at"])
    assert before + timedelta(hours=24) <= expires <= timezone.now() + timedelta(hours=24)


def test_one_click_keeps_no_port_for_a_scan_and_no_source_for_several(api, sensor):
    scan = make_incident(sensor, kind="port_scan", targets=("10.0.0.5:22/tcp", "10.0.0.5:23/tcp"))
    spread = make_incident(sensor, kind="syn_flood", sources=("198.51.100.1", "198.51.100.2"))

    by_scan = api.post(f"/api/incidents/{scan.pk}/suppress/", {}, format="json").json()
    by_spread = api.post(f"/api/incidents/{spread.pk}/suppress/", {}, format="json").json()

    assert (by_scan["source_cidr"], by_scan["target_cidr"], by_scan["port"]) == (
        "203.0.113.9/32",
        "10.0.0.5/32",
        None,
    )
    assert (by_spread["source_cidr"], by_spread["target_cidr"], by_spread["port"]) == (
        None,
        "10.0.0.5/32",
        22,
    )


def test_one_click_with_ipv6_and_a_portless_target(api, sensor):
    v6 = make_incident(sensor, kind="udp_flood", sources=("2001:db8::9",), targets=("2001:db8::5:53/udp",))
    icmp = make_incident(sensor, kind="icmp_flood", sources=("192.0.2.7",), targets=("10.0.0.8",))

    by_v6 = api.post(f"/api/incidents/{v6.pk}/suppress/", format="json").json()
    by_icmp = api.post(f"/api/incidents/{icmp.pk}/suppress/", format="json").json()

    assert (by_v6["source_cidr"], by_v6["target_cidr"], by_v6["port"]) == (
        "2001:db8::9/128",
        "2001:db8::5/128",
        53,
    )
    assert (by_icmp["source_cidr"], by_icmp["target_cidr"], by_icmp["port"]) == (
        "192.0.2.7/32",
        "10.0.0.8/32",
        None,
    )


def test_one_click_with_a_reason_and_an_expiry(api, sensor, settings):
    incident = make_incident(sensor)
    url = f"/api/incidents/{incident.pk}/suppress/"

    never = api.post(url, {"reason": "pentest", "expires_at": None}, format="json")
    later = api.post(url, {"expires_at": "2099-01-01T00:00:00Z"}, format="json")
    past = api.post(url, {"expires_at": "2020-01-01T00:00:00Z"}, format="json")
    blank = api.post(url, {"reason": ""}, format="json")
    extra = api.post(url, {"port": 22}, format="json")
    settings.NETMON_SUPPRESSION_DEFAULT_HOURS = 0
    default_never = api.post(url, format="json")

    assert (
        never.status_code == 201
        and never.json()["reason"] == "pentest"
        and never.json()["expires_at"] is None
    )
    assert later.json()["expires_at"].startswith("2099-01-01T00:00:00")
    assert past.status_code == 400 and "in the past" in past.json()["fields"]["expires_at"]
    assert blank.status_code == 400 and "reason" in blank.json()["fields"]
    assert extra.status_code == 400 and "unknown field" in extra.json()["fields"]["port"]
    assert default_never.json()["expires_at"] is None
    assert SuppressionRule.objects.count() == 3


def test_one_click_on_an_unknown_incident_is_a_404(api):
    assert api.post("/api/incidents/999999/suppress/", format="json").status_code == 404


# --- who may do what ----------------------------------------------------------------------------------


def test_the_viewer_sees_rules_but_cannot_create_or_delete_them(viewer_api, nogroup_api, sensor):
    made = rule(port=22)
    incident = make_incident(sensor)

    assert viewer_api.get(URL).status_code == 200
    assert viewer_api.get(f"{URL}{made.pk}/").status_code == 200
    refused = viewer_api.post(URL, {"port": 23, "reason": "x"}, format="json")
    assert refused.status_code == 403 and "detection.add_suppressionrule" in refused.json()["detail"]
    assert viewer_api.post(f"/api/incidents/{incident.pk}/suppress/", format="json").status_code == 403
    deleted = viewer_api.delete(f"{URL}{made.pk}/")
    assert deleted.status_code == 403 and "detection.delete_suppressionrule" in deleted.json()["detail"]
    assert nogroup_api.get(URL).status_code == 403
    assert list(SuppressionRule.objects.values_list("pk", flat=True)) == [made.pk]


def test_the_analyst_and_the_admin_may_create_and_delete(api, admin_api):
    for client in (api, admin_api):
        made = client.post(URL, {"kind": "port_scan", "reason": "x"}, format="json")
        assert made.status_code == 201
        assert client.delete(made.json()["url"]).status_code == 204


# --- expiry -------------------------------------------------------------------------------------------


def test_an_expired_rule_does_not_match_and_shows_inactive(api):
    expired = rule(port=22, expires_at=timezone.now() - timedelta(seconds=1))
    lasting = rule(port=23, expires_at=timezone.now() + timedelta(hours=1))

    rules = RuleSet.active()

    assert rules.match("10.0.0.1", "10.0.0.2", 22, "brute_force") is None
    assert rules.match("10.0.0.1", "10.0.0.2", 23, "brute_force") == lasting
    assert (
        RuleSet.active(now=timezone.now() + timedelta(hours=2)).match("10.0.0.1", "10.0.0.2", 23, None)
        is None
    )
    assert (
        RuleSet.active(now=timezone.now() - timedelta(hours=1)).match("10.0.0.1", "10.0.0.2", 22, None)
        == expired
    )
    shown = {row["id"]: row["active"] for row in api.get(URL).json()["results"]}
    assert shown == {expired.pk: False, lasting.pk: True}


# --- the matcher ----------------------------------------------------------------------------------------


def test_cidrs_match_ipv4_ipv6_and_mapped_addresses():
    v4 = rule(source_cidr="10.0.0.0/24")
    v6 = rule(target_cidr="2001:db8::/32")
    rules = RuleSet.active()

    assert rules.match("10.0.0.7", None, None, None) == v4
    assert rules.match("::ffff:10.0.0.7", None, None, None) == v4  # IPv4-mapped IPv6
    assert rules.match("10.0.1.7", None, None, None) is None
    assert rules.match("10.0.1.7", "2001:db8:1::5", None, None) == v6
    assert rules.match("10.0.1.7", "2001:db9::5", None, None) is None
    assert rules.match("2001:db8::1", "10.0.0.7", None, None) is None  # versions never mix
    assert rules.match(None, None, None, None) is None  # an unknown address matches no CIDR
    assert rules.match("not an address", "", None, None) is None


def test_port_and_kind_criteria():
    ssh = rule(target_cidr="10.0.0.5", port=22)
    scans = rule(kind="port_scan")
    rules = RuleSet.active()

    assert rules.match("1.2.3.4", "10.0.0.5", 22, None) == ssh
    assert rules.match("1.2.3.4", "10.0.0.5", 23, None) is None
    assert rules.match("1.2.3.4", "10.0.0.5", None, None) is None  # portless traffic: not port 22
    assert rules.match("1.2.3.4", "10.0.0.9", 99, "port_scan") == scans
    assert rules.match("1.2.3.4", "10.0.0.9", 99, None) is None  # kind not known yet: kind rules wait
    assert rules.match("1.2.3.4", "10.0.0.9", 99, "syn_flood") is None


def test_every_criterion_must_match_and_the_oldest_matching_rule_wins():
    narrow = rule(source_cidr="192.0.2.1", target_cidr="10.0.0.5", port=22, kind="brute_force")
    broad = rule(target_cidr="10.0.0.0/8")
    rules = RuleSet.active()

    assert rules.match("192.0.2.1", "10.0.0.5", 22, "brute_force") == narrow
    assert rules.match("192.0.2.2", "10.0.0.5", 22, "brute_force") == broad
    assert rules.match("192.0.2.1", "10.0.0.5", 22, None) == broad  # no kind yet: only the kindless rule
    assert len(rules) == 2 and not RuleSet([])
    assert RuleSet([]).match("192.0.2.1", "10.0.0.5", 22, "brute_force") is None


def test_loading_is_one_query_and_matching_none(django_assert_num_queries):
    for port in range(20):
        rule(port=port, kind="syn_flood")
    with django_assert_num_queries(1):
        rules = RuleSet.active()
    with django_assert_num_queries(0):
        assert rules.match("10.0.0.1", "10.0.0.2", 19, "syn_flood").port == 19
        assert rules.match("10.0.0.1", "10.0.0.2", 99, "syn_flood") is None


# --- hits ---------------------------------------------------------------------------------------------


def test_record_hits_adds_counts_and_keeps_the_latest_time(django_assert_num_queries):
    first, second, untouched = rule(port=1), rule(port=2), rule(port=3)
    t1, t2 = T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)

    with django_assert_num_queries(2):  # one UPDATE per rule
        record_hits({first.pk: 3, second.pk: 2}, t2)
    record_hits({first.pk: 4, 999999: 1}, t1)  # an earlier read finishing late; a deleted rule

    for row in (first, second, untouched):
        row.refresh_from_db()
    assert (first.hits, first.last_hit_at) == (7, t2)
    assert (second.hits, second.last_hit_at) == (2, t2)
    assert (untouched.hits, untouched.last_hit_at) == (0, None)


# --- rule_from_incident and the admin ---------------------------------------------------------------------


def test_rule_from_incident_defaults(sensor, user, settings):
    settings.NETMON_SUPPRESSION_DEFAULT_HOURS = 2
    incident = make_incident(sensor, kind="new_service", targets=("[2001:db8::5]:8443/tcp",))

    made = rule_from_incident(incident, user, None)

    assert (made.source_cidr, made.target_cidr, made.port, made.kind) == (
        "203.0.113.9/32", "2001:db8::5/128", 8443, "new_service",
    )  # fmt: skip
    assert made.created_by == user and made.incident == incident
    assert timedelta(hours=1, minutes=59) < made.expires_at - timezone.now() <= timedelta(hours=2)


@pytest.fixture
def admin_web(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


def test_the_admin_form_uses_the_validator(admin_web, staff):
    form = {"source_cidr": "10.0.0.5/24", "target_cidr": "", "port": "", "kind": "", "reason": "x",
            "expires_at_0": "", "expires_at_1": ""}  # fmt: skip
    bad = admin_web.post("/admin/detection/suppressionrule/add/", form)
    assert bad.status_code == 200 and b"did you mean 10.0.0.0/24" in bad.content
    nothing = admin_web.post("/admin/detection/suppressionrule/add/", {**form, "source_cidr": ""})
    assert nothing.status_code == 200 and b"at least one of source_cidr" in nothing.content
    assert not SuppressionRule.objects.exists()

    good = admin_web.post("/admin/detection/suppressionrule/add/", {**form, "source_cidr": "10.0.0.5"})

    assert good.status_code == 302, good.content.decode()[:2000]
    made = SuppressionRule.objects.get()
    assert (made.source_cidr, made.created_by, made.expires_at) == ("10.0.0.5/32", staff, None)
    page = admin_web.get("/admin/detection/suppressionrule/").content.decode()
    assert "from 10.0.0.5/32" in page


def test_the_incident_admin_action_suppresses_similar_incidents(admin_web, staff, sensor):
    incident = make_incident(sensor, kind="syn_flood")

    response = admin_web.post(
        "/admin/detection/incident/", {"action": "suppress_similar", "_selected_action": [incident.pk]}
    )

    assert response.status_code == 302
    made = SuppressionRule.objects.get()
    assert (made.source_cidr, made.target_cidr, made.port, made.kind) == (
        "203.0.113.9/32", "10.0.0.5/32", 22, "syn_flood",
    )  # fmt: skip
    assert made.incident == incident and made.created_by == staff and made.expires_at is not None
