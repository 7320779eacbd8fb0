"""Capture's API routes (mounted under /api/)."""

from django.urls import path

from capture.api import views

urlpatterns = [
    path("config", views.ConfigView.as_view(), name="config"),
    path("config/history", views.ConfigHistoryView.as_view(), name="config-history"),
    path("interfaces", views.InterfacesView.as_view(), name="interfaces"),
    path("packets/", views.PacketListView.as_view(), name="packets"),
    path("packets/pcap", views.PacketPcapView.as_view(), name="packets-pcap"),
    path("flows/", views.FlowListView.as_view(), name="flows"),
    path("talkers", views.TalkerListView.as_view(), name="talkers"),
]
