"""Who may do what over the API: Django permissions, declared per view and per HTTP method.

``HasPermission`` is the project's default DRF permission class (``REST_FRAMEWORK`` in the
settings), so every view says what each of its methods needs::

    class ConfigView(APIView):
        required_permissions = {"GET": "capture.view_monitorconfig", "POST": "capture.change_monitorconfig"}

A method the view answers without an entry is refused, so nothing is open by accident (a view
that is open on purpose, like the token endpoint or /healthz, sets its own ``permission_classes``).
HEAD follows GET; OPTIONS follows GET, or POST when there is no GET (it describes the request).

It lives in ``capture``, the lowest app, so every app's views can use it; the roles that hold
these permissions are the project's (``netmon/roles.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rest_framework.permissions import BasePermission

from capture.choices import Role

if TYPE_CHECKING:  # rest_framework.views imports the settings, which import this module
    from rest_framework.request import Request
    from rest_framework.views import APIView

NO_ROLE_MESSAGE = (
    "your account has no role yet: ask an admin to give you one (" + ", ".join(Role.values[:-1])
    + " or " + Role.values[-1] + ")"
)  # fmt: skip


def has_no_role(user: Any) -> bool:
    """An authenticated, active user who holds no permission at all (in no group, or empty ones)."""
    if not getattr(user, "is_authenticated", False) or not user.is_active or user.is_superuser:
        return False
    return not user.get_all_permissions()


def permission_denied_message(user: Any, permission: str) -> str:
    """What a refused user is told: to ask for a role, or which permission the action needs."""
    if has_no_role(user):
        return NO_ROLE_MESSAGE
    return f"permission denied: this needs the permission {permission}"


def required_permission(view: APIView, method: str) -> str | None:
    """The permission ``method`` needs on ``view`` (None: the view declares nothing for it)."""
    table: dict[str, str] = getattr(view, "required_permissions", {})
    if method == "HEAD":
        method = "GET"
    if method == "OPTIONS" and "OPTIONS" not in table:
        method = "GET" if "GET" in table else "POST"
    return table.get(method)


class HasPermission(BasePermission):
    """Allows a request when the user holds the permission its view declares for the method."""

    message = "permission denied"

    def has_permission(self, request: Request, view: APIView) -> bool:
        method = request.method.upper()
        handler = getattr(view, method.lower(), None)
        if method.lower() not in view.http_method_names or handler is None:
            return True  # DRF answers 405 next: there is nothing to protect
        user = request.user
        if not getattr(user, "is_authenticated", False):
            return False  # 401 (DRF: not authenticated)
        permission = required_permission(view, method)
        if permission is None:
            self.message = f"permission denied: {type(view).__name__} declares no permission for {method}"
            return False
        if user.has_perm(permission):
            return True
        self.message = permission_denied_message(user, permission)
        return False
