from django.urls import re_path

from scoring import views

# With or without a trailing slash, answered directly (no redirect), as the job endpoints are.
urlpatterns = [
    re_path(r"^(?P<customer>[^/]+)/standing/?$", views.customer_standing, name="customer-standing"),
]
