from jobs.commands import JobCommand


class Command(JobCommand):
    help = "Run offer-loop through the locked runner and record it."
    job_name = "offer-loop"
