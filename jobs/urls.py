from django.urls import re_path

from jobs import views

# With or without a trailing slash, the views answer directly: Vercel Cron follows no redirect.
# "health" is not a job's name (system check jobs.E004).
urlpatterns = [
    re_path(r"^health/?$", views.health, name="jobs-health"),
    re_path(r"^(?P<name>[^/]+)/?$", views.run, name="run-job"),
]
