"""The dashboard page (HTML); live data arrives over the WebSocket at /ws/monitor/."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "netmon/dashboard.html")
