from django.urls import re_path

from jobs import views

# With or without a trailing slash, the view answers directly: Vercel Cron follows no redirect.
urlpatterns = [re_path(r"^(?P<name>[^/]+)/?$", views.run, name="run-job")]
