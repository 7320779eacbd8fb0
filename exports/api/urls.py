"""Export API routes (mounted under /api/); /api/export is the prototype's name for creating one."""

from django.urls import path

from exports.api import views

urlpatterns = [
    path("export", views.ExportListView.as_view(http_method_names=["post", "options"]), name="export-legacy"),
    path("exports/", views.ExportListView.as_view(), name="exports"),
    path("exports/<uuid:job_id>/", views.ExportDetailView.as_view(), name="export-detail"),
    path("exports/<uuid:job_id>/download", views.ExportDownloadView.as_view(), name="export-download"),
]
