from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Scheduled jobs"

    def ready(self) -> None:
        from jobs import checks  # noqa: F401  (registers the system checks)

        autodiscover_modules("jobs")  # each app's jobs.py declares its jobs, as admin.py registers its models
