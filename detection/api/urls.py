"""Detection API routes (mounted under /api/)."""

from django.urls import path

from detection.api import views

urlpatterns = [
    path("anomalies/", views.AnomalyListView.as_view(), name="anomalies"),
    path("anomalies/<int:pk>/", views.AnomalyDetailView.as_view(), name="anomaly-detail"),
    path("incidents/", views.IncidentListView.as_view(), name="incidents"),
    path("incidents/<int:pk>/", views.IncidentDetailView.as_view(), name="incident-detail"),
    path("incidents/<int:pk>/anomalies/", views.IncidentAnomaliesView.as_view(), name="incident-anomalies"),
    path("incidents/<int:pk>/timeline/", views.IncidentTimelineView.as_view(), name="incident-timeline"),
    path("incidents/<int:pk>/pcap", views.IncidentPcapView.as_view(), name="incident-pcap"),
    path("incidents/<int:pk>/suppress/", views.IncidentSuppressView.as_view(), name="incident-suppress"),
    path("suppressions/", views.SuppressionListView.as_view(), name="suppressions"),
    path("suppressions/<int:pk>/", views.SuppressionDetailView.as_view(), name="suppression-detail"),
    path("models/", views.ModelListView.as_view(), name="models"),
    path("models/train", views.ModelTrainView.as_view(), name="models-train"),
    path("models/<int:pk>/activate", views.ModelActivateView.as_view(), name="model-activate"),
]
