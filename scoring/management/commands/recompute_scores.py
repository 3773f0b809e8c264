from jobs.commands import JobCommand


class Command(JobCommand):
    help = "Recompute every customer's score (recompute-scores), locked and recorded."
    job_name = "recompute-scores"
