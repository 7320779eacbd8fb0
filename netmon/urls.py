"""URL routes: the API under /api/ (each app's api/urls.py), admin, auth, schema, health, dashboard."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from netmon import api, metrics, views

api_patterns = [
    path("status", api.StatusView.as_view(), name="status"),
    path("auth/token/", api.TokenView.as_view(), name="auth-token"),
    path("schema/", api.SchemaView.as_view(), name="schema"),
    path("docs/", api.DocsView.as_view(url_name="schema"), name="docs"),
    path("", include("capture.api.urls")),
    path("", include("exports.api.urls")),
    path("", include("detection.api.urls")),
    path("", include("alerts.api.urls")),
]

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("incidents/<int:pk>/", views.incident_page, name="incident-page"),
    path("api/", include(api_patterns)),
    path("admin/login/", views.admin_login, name="admin-login"),  # rate limited, then the admin's own
    path("admin/", admin.site.urls),
    path("accounts/login/", views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", api.HealthView.as_view(), name="healthz"),
    path("readyz", api.ReadyView.as_view(), name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
]

handler404 = "netmon.api.json_not_found"
handler500 = "netmon.api.json_server_error"
