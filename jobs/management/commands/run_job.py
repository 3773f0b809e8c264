from jobs.commands import JobCommand


class Command(JobCommand):
    help = "Run a registered job through the locked runner and record it."
