from jobs.commands import JobCommand


class Command(JobCommand):
    help = "Run resolve-outcomes through the locked runner and record it."
    job_name = "resolve-outcomes"
