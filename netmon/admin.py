"""The admin's user pages: an admin-role user manages users and their roles, but cannot make anyone
(themselves included) a superuser or hand out single permissions past the roles.

Django's ``auth.change_user`` alone would let its holder tick "superuser status" on their own
account; here those two fields are read-only unless the editor is a superuser already.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

User = get_user_model()

admin.site.unregister(User)


@admin.register(User)
class RoleAwareUserAdmin(UserAdmin):
    """Django's user admin, with the superuser flag and single permissions kept for superusers."""

    SUPERUSER_ONLY = ("is_superuser", "user_permissions")

    def get_readonly_fields(self, request, obj=None):
        fields = tuple(super().get_readonly_fields(request, obj))
        return fields if request.user.is_superuser else fields + self.SUPERUSER_ONLY
