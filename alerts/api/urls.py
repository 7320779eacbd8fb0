"""Notification API routes (mounted under /api/)."""

from django.urls import path

from alerts.api import views

urlpatterns = [
    path(
        "notifications/destinations/", views.DestinationListView.as_view(), name="notification-destinations"
    ),
    path(
        "notifications/destinations/<int:pk>/",
        views.DestinationDetailView.as_view(),
        name="notification-destination-detail",
    ),
    path(
        "notifications/destinations/<int:pk>/test/",
        views.DestinationTestView.as_view(),
        name="notification-destination-test",
    ),
    path("notifications/deliveries/", views.DeliveryListView.as_view(), name="notification-deliveries"),
]
