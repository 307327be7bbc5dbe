from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from collections_app.admin_views import jobs_view

admin.site.site_header = "Semart catalogue"
admin.site.site_title = "Semart"
admin.site.index_title = "Collection management"

urlpatterns = [
    # Before the admin's own URLs, whose catch-all would answer first; admin_view keeps it staff-only.
    path("admin/jobs/", admin.site.admin_view(jobs_view), name="admin-jobs"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("search_app.api.urls")),
    path("", include("search_app.urls")),
]

if settings.DEBUG:
    from django.conf.urls.static import static

    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
