"""The dashboard page (HTML); live data arrives over the WebSocket at /ws/monitor/.

The page shows each user what their permissions allow (``netmon/roles.py``): controls a user may
not use are hidden or disabled, and every action is checked again by the server anyway. A user
with no role sees only a message saying to ask an admin for one.
"""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods, require_safe
from rest_framework.throttling import ScopedRateThrottle

from capture.permissions import NO_ROLE_MESSAGE, has_no_role
from netmon import roles


@require_safe  # a page: GET and HEAD (it answered POST, PUT and DELETE with the page too)
@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    if has_no_role(request.user):
        return render(request, "netmon/no_role.html", {"message": NO_ROLE_MESSAGE}, status=403)
    context = {
        "roles": roles.roles_of(request.user),
        "permissions": roles.dashboard_permissions(request.user),
    }
    return render(request, "netmon/dashboard.html", context)


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
