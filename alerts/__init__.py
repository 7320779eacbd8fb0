"""Notifications: apprise messages when an incident opens or rises in severity (README "Notifications")."""
