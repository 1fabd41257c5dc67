"""The admin app, with the portal's own site (a dashboard on its index) as the default site."""

from django.contrib.admin.apps import AdminConfig


class PortalAdminConfig(AdminConfig):
    default_site = "portal.dashboard.PortalAdminSite"
