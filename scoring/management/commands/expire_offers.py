from jobs.commands import JobCommand


class Command(JobCommand):
    help = "Run expire-offers through the locked runner and record it."
    job_name = "expire-offers"
