"""The dashboard and incident pages (HTML); live data arrives over the WebSocket at /ws/monitor/.

The page shows each user what their permissions allow (``netmon/roles.py``): controls a user may
not use are hidden or disabled, and every action is checked again by the server anyway. A user
with no role sees only a message saying to ask an admin for one.
"""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.html import format_html
from django.views.decorators.http import require_http_methods, require_safe
from rest_framework.throttling import ScopedRateThrottle

from capture.choices import (
    INCIDENT_KIND_TITLES,
    INCIDENT_STATUS_ACTIONS,
    INCIDENT_TRANSITIONS,
    IncidentKind,
    IncidentSeverity,
    IncidentStatus,
)
from capture.permissions import NO_ROLE_MESSAGE, has_no_role, permission_denied_message
from detection.models import Incident
from netmon import roles

VIEW_INCIDENT = "detection.view_incident"


def incident_vocabulary() -> dict[str, object]:
    """What the pages need to show incidents and offer their actions, spelled in capture/choices.py:
    each kind's title, the severities from the least, the statuses (the first is a new incident's),
    the transition rule and each target status's button."""
    return {
        "kinds": {kind.value: INCIDENT_KIND_TITLES.get(kind, kind.label) for kind in IncidentKind},
        "severities": IncidentSeverity.values,
        "statuses": IncidentStatus.values,
        "transitions": {status: list(targets) for status, targets in INCIDENT_TRANSITIONS.items()},
        "actions": dict(INCIDENT_STATUS_ACTIONS),
    }


def _page_context(request: HttpRequest) -> dict[str, object]:
    return {
        "roles": roles.roles_of(request.user),
        "permissions": roles.dashboard_permissions(request.user),
        "vocabulary": incident_vocabulary(),
    }


def _message(request: HttpRequest, title: str, message: str, status: int) -> HttpResponse:
    return render(request, "netmon/message.html", {"title": title, "message": message}, status=status)


@require_safe  # a page: GET and HEAD (it answered POST, PUT and DELETE with the page too)
@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    if has_no_role(request.user):
        return render(request, "netmon/no_role.html", {"message": NO_ROLE_MESSAGE}, status=403)
    return render(request, "netmon/dashboard.html", _page_context(request))


@require_safe
@login_required
def incident_page(request: HttpRequest, pk: int) -> HttpResponse:
    """One incident: its header, packet-rate timeline, hosts, anomalies and packets, and its actions.

    The page's data comes from the API (GET /api/incidents/{id}/, .../timeline/, .../anomalies/,
    /api/packets/); the view only checks that the incident exists and that the user may see it.
    """
    if has_no_role(request.user):
        return render(request, "netmon/no_role.html", {"message": NO_ROLE_MESSAGE}, status=403)
    if not request.user.has_perm(VIEW_INCIDENT):
        return _message(request, "Not allowed", permission_denied_message(request.user, VIEW_INCIDENT), 403)
    # A candidate (evidence not yet sustained) is not an incident yet: the API answers 404 for it too.
    incident = Incident.objects.opened().filter(pk=pk).select_related("sensor").first()
    if incident is None:
        text = format_html('There is no incident {}. <a href="/">Back to the dashboard</a>', pk)
        return _message(request, "No such incident", text, 404)
    return render(request, "netmon/incident.html", {**_page_context(request), "incident": incident})


def _login_throttled(request: HttpRequest) -> HttpResponse | None:
    """429 with Retry-After when this client address has used up the "login" allowance, else None."""
    throttle = ScopedRateThrottle()
    if throttle.allow_request(request, LoginView):
        return None
    response = HttpResponse(
        "Too many login attempts; try again later.\n", status=429, content_type="text/plain"
    )
    wait = throttle.wait()
    if wait is not None:
        response["Retry-After"] = str(max(1, round(wait)))
    return response


class LoginView(auth_views.LoginView):
    """The dashboard's login form, rate limited per client address like POST /api/auth/token/.

    Both count against the same "login" rate (REST_FRAMEWORK DEFAULT_THROTTLE_RATES,
    NETMON_LOGIN_RATE), as does the admin's login form, so a password guesser gains nothing by
    switching between them.
    """

    throttle_scope = "login"
    http_method_names = ["get", "head", "post", "options"]  # not PUT (FormView would take it as POST)

    def post(self, request, *args, **kwargs):
        return _login_throttled(request) or super().post(request, *args, **kwargs)


@require_http_methods(["GET", "HEAD", "POST"])  # the admin's LoginView would take PUT as POST
def admin_login(request: HttpRequest) -> HttpResponse:
    """The admin's login form (admin.site.login), with the same per-address allowance."""
    from django.contrib import admin

    if request.method == "POST" and (refused := _login_throttled(request)):
        return refused
    return admin.site.login(request)
