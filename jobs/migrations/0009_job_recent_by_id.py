"""A job's latest runs, ordered by time and id, read from one index (the overview's strip)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("jobs", "0008_checkin_channel")]

    operations = [
        migrations.RemoveIndex(model_name="jobrun", name="jobrun_job_recent"),
        migrations.AddIndex(
            model_name="jobrun",
            index=models.Index(fields=["job", "-started_at", "-id"], name="jobrun_job_recent"),
        ),
    ]
