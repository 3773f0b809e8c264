"""WSGI entry point; Vercel serves `application` (settings.WSGI_APPLICATION)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

application = get_wsgi_application()
app = application  # the name Vercel's Python runtime also looks for
