from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/jobs/", include("jobs.urls")),
    path("api/customers/", include("scoring.urls")),
]

handler400 = "jobs.views.bad_request"
handler403 = "jobs.views.permission_denied"
handler404 = "jobs.views.page_not_found"
handler500 = "jobs.views.server_error"
