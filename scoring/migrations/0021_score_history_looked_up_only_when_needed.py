"""The score history's trigger looks up the changed customers' last changes only when the history has a change later
than one of the new scores (PostgreSQL).

Each change is dated at the later of its score's computed_at and the customer's last change (migration 0019), so
that the history reads in the order it was written. Nearly always the new scores are a run's, at its `now`, later
than every change in the history: then no look-up can move a date, and the trigger reads only the end of the
history's time index (one probe) instead of the last change of every changed customer (a probe each, migration
0020). With a history of 1,000,000 changes (ten per customer, over 90 days), a day's incremental run at 1M
appointments slid the window in 57 ms and rescored the marked customers in 35 ms; with this, 31 ms and 28 ms (the
same statements with no history at all: 28 and 30 ms). bench.recompute, with a history as 90 days leave it (300,000
changes): the run's own work 125 ms before, 98 ms after.

When a change in the history is later (a resumed full pass writes at the time it began; a staff member rescored a
customer at a later `now`), the look-up is 0020's (its LOOK_UP).
"""

import importlib

from django.db import migrations

PER_STATEMENT = importlib.import_module("scoring.migrations.0020_score_history_planned_per_statement")

POSTGRESQL = f"""
CREATE OR REPLACE FUNCTION scoring_score_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    latest timestamptz;
BEGIN  -- only the rows whose score or tier changed (a run also rewrites a row whose counts alone changed)
    EXECUTE 'SELECT max(at) FROM scoring_scorechange' INTO latest;  -- planned here: from the end of its time index
    IF (latest <= (SELECT min(computed_at) FROM new_rows)) IS NOT FALSE THEN
        -- No change in the history is later than any of the new scores: each change is dated by its score.
        INSERT INTO scoring_scorechange (customer_id, at, score, tier, previous_score, previous_tier, run_id)
            SELECT n.customer_id, n.computed_at, n.score, n.tier, o.score, o.tier, n.run_id
            FROM new_rows n JOIN old_rows o ON o.customer_id = n.customer_id
            WHERE o.score <> n.score OR o.tier <> n.tier;
    ELSE
        EXECUTE '{PER_STATEMENT.LOOK_UP}';
    END IF;
    RETURN NULL;
END $$;
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":  # SQLite's trigger is a row's: its look-up, an index's
        schema_editor.execute(POSTGRESQL, params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PER_STATEMENT.POSTGRESQL, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ("scoring", "0020_score_history_planned_per_statement"),
    ]

    operations = [
        migrations.RunPython(forward, backward),
    ]
