"""Admin building blocks shared by the apps: read-only evidence, and site scoping for managers."""

from django.contrib import admin
from django.core.cache import cache
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Q
from django.http import Http404
from django.utils.functional import cached_property

from portal.models import Site


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records that come from vendors are evidence: nobody edits or adds them by hand."""

    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


def visible_site_ids(request) -> list[int] | None:
    """The sites this user belongs to; None for a superuser, who sees every site."""
    if request.user.is_superuser:
        return None
    if not hasattr(request, "_visible_site_ids"):
        request._visible_site_ids = list(request.user.sites.values_list("pk", flat=True))
    return request._visible_site_ids


class SiteScopedAdmin(admin.ModelAdmin):
    """A manager sees only their sites' rows: in lists, search, filters, autocomplete (which asks
    this queryset) and change pages, where another site's object is a 404.

    ``site_paths``: lookups from this model to a Site; a row is visible when any of them is one of
    the user's sites. Paths through a to-many relation are checked with a subquery (no duplicates).
    """

    site_paths: tuple[str, ...] = ("site",)

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        sites = visible_site_ids(request)
        if sites is None:
            return queryset
        visible = Q()
        for path in self.site_paths:
            if self._is_direct(path):
                visible |= Q(**{f"{path}__in": sites})
            else:
                matching = self.model._default_manager.filter(**{f"{path}__in": sites}).values("pk")
                visible |= Q(pk__in=matching)
        return queryset.filter(visible)

    def _is_direct(self, path: str) -> bool:
        """Whether every step of the path is a forward to-one relation (no duplicate rows)."""
        model = self.model
        for name in path.split("__"):
            if name == "pk":
                return True
            field = model._meta.get_field(name)
            if field.many_to_many or field.one_to_many:
                return False
            model = field.related_model
        return True

    def get_object(self, request, object_id, from_field=None):
        found = super().get_object(request, object_id, from_field)
        if found is None:
            raise Http404("No such object in your sites.")
        return found


def site_filter(path: str = "site"):
    """A list filter by site offering only the user's own sites (the stock one lists them all)."""

    class SiteFilter(admin.SimpleListFilter):
        title = "site"
        parameter_name = f"{path}__id__exact"

        def lookups(self, request, model_admin):
            sites = Site.objects.order_by("name")
            visible = visible_site_ids(request)
            if visible is not None:
                sites = sites.filter(pk__in=visible)
            return [(str(site.pk), site.name) for site in sites]

        def queryset(self, request, queryset):
            return queryset.filter(**{f"{path}__id": self.value()}) if self.value() else queryset

    return SiteFilter


class _Echo:
    """A file-like object whose write returns the line: lets csv.writer feed a streaming response."""

    def write(self, value: str) -> str:
        return value


class CsvExportAdmin(admin.ModelAdmin):
    """An "Export CSV" link on the list: the rows the list shows (filters, search and site scoping
    included), every page of them, streamed from a server-side cursor so a million rows never sit
    in memory.

    ``export_columns``: (header, lookup) pairs read with ``values_list``.
    """

    export_columns: list[tuple[str, str]] = []
    change_list_template = "admin/csv_export_change_list.html"

    def get_urls(self):
        from django.urls import path

        name = f"{self.opts.app_label}_{self.opts.model_name}_export"
        export = path("export.csv", self.admin_site.admin_view(self.export_csv), name=name)
        return [export, *super().get_urls()]

    def export_csv(self, request):
        import csv

        from django.core.exceptions import PermissionDenied
        from django.http import StreamingHttpResponse
        from django.utils import timezone

        if not self.has_view_permission(request):
            raise PermissionDenied
        changelist = self.get_changelist_instance(request)
        rows = changelist.get_queryset(request).values_list(*(lookup for _, lookup in self.export_columns))
        writer = csv.writer(_Echo())

        def lines():
            yield writer.writerow([header for header, _ in self.export_columns])
            for row in rows.iterator(chunk_size=2000):
                yield writer.writerow(row)

        response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
        name = f"{self.opts.verbose_name_plural.replace(' ', '-')}-{timezone.now():%Y%m%d-%H%M}.csv"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response


class EstimatedCountPaginator(Paginator):
    """An unfiltered list of a big table counts from PostgreSQL's statistics, not COUNT(*) (which
    reads every row); filtered lists and small tables still count exactly."""

    threshold = 100_000

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        connection = connections[queryset.db]
        if not queryset.query.has_filters() and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [queryset.model._meta.db_table]
                )
                row = cursor.fetchone()
            if row and row[0] >= self.threshold:
                return row[0]
        return super().count


def distinct_values_filter(field: str, title: str, seconds: int = 600):
    """A list filter offering the values a column holds, looked up at most every ``seconds``:
    the stock filter's DISTINCT reads a big table on every page view."""

    class DistinctValuesFilter(admin.SimpleListFilter):
        parameter_name = f"{field}__exact"

        def lookups(self, request, model_admin):
            model = model_admin.model
            key = f"distinct:{model._meta.label_lower}:{field}"
            values = cache.get(key)
            if values is None:
                values = sorted(set(model._default_manager.order_by().values_list(field, flat=True).distinct()) - {""})
                cache.set(key, values, seconds)
            return [(value, value) for value in values]

        def queryset(self, request, queryset):
            return queryset.filter(**{field: self.value()}) if self.value() else queryset

    DistinctValuesFilter.title = title
    return DistinctValuesFilter
