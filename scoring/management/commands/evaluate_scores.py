from jobs.commands import JobCommand


class Command(JobCommand):
    help = "Replay the rule at a past date and store, per shop, what its tiers predicted (evaluate-scores)."
    job_name = "evaluate-scores"
