"""Detection API routes (mounted under /api/)."""

from django.urls import path

from detection.api import views

urlpatterns = [
    path("anomalies/", views.AnomalyListView.as_view(), name="anomalies"),
    path("anomalies/<int:pk>/", views.AnomalyDetailView.as_view(), name="anomaly-detail"),
    path("models/", views.ModelListView.as_view(), name="models"),
    path("models/train", views.ModelTrainView.as_view(), name="models-train"),
    path("models/<int:pk>/activate", views.ModelActivateView.as_view(), name="model-activate"),
]
