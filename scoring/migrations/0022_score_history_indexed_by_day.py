"""The score history is indexed by day and customer instead of by customer and time: a day's changes are written to a
few pages of the index instead of a page each.

A run dates all its changes at its own `now`. In the (customer, at) index each change went to the page where its
customer sorts: in a day's run at 1M appointments (a history of 300,000 changes), the window's slide wrote 2,298
changes to 1,358 of that index's 2,048 pages, each logged whole as its first write after a checkpoint (8.4 MB of WAL
for the history's insert alone), and the run cost what it costs without a history plus a third. In the (day,
customer) index a run's changes all go to its day, at the index's end. bench.recompute's incremental run, same data,
timed statement by statement: the run's own work 143-163 ms before, 111-116 ms after, 109-113 ms with the history's
trigger off.

What read the history by customer reads it a probe per (UTC) day from its first change to its last, about the
retention's 90: a customer's page (scoring.history.of) and the cascade of a deleted customer (PostgreSQL's trigger,
migration 0017; Django no longer deletes the history itself there: its DELETE by customer would now scan it). The
trigger's look-up of the customers' last changes, when the history holds a change later than a new score
(migrations 0019-0021), needs only the changes later than the earliest new score: it reads those from the time
index, planned with that time.
"""

import importlib

from django.db import migrations, models

import scoring.models

ONLY_WHEN_NEEDED = importlib.import_module("scoring.migrations.0021_score_history_looked_up_only_when_needed")
IN_ORDER = importlib.import_module("scoring.migrations.0019_score_history_in_order")
PER_STATEMENT = importlib.import_module("scoring.migrations.0020_score_history_planned_per_statement")

# 0020's look-up, reading only the changes later than the earliest new score ($1): an earlier one moves no date.
LOOK_UP = PER_STATEMENT.LOOK_UP.replace("WHERE customer_id IN", "WHERE at > $1 AND customer_id IN")
assert LOOK_UP != PER_STATEMENT.LOOK_UP

POSTGRESQL = f"""
CREATE OR REPLACE FUNCTION scoring_score_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    latest timestamptz;
    earliest timestamptz;
BEGIN  -- only the rows whose score or tier changed (a run also rewrites a row whose counts alone changed)
    EXECUTE 'SELECT max(at) FROM scoring_scorechange' INTO latest;  -- planned here: from the end of its time index
    SELECT min(computed_at) INTO earliest FROM new_rows;
    IF (latest <= earliest) IS NOT FALSE THEN
        -- No change in the history is later than any of the new scores: each change is dated by its score.
        INSERT INTO scoring_scorechange (customer_id, at, score, tier, previous_score, previous_tier, run_id)
            SELECT n.customer_id, n.computed_at, n.score, n.tier, o.score, o.tier, n.run_id
            FROM new_rows n JOIN old_rows o ON o.customer_id = n.customer_id
            WHERE o.score <> n.score OR o.tier <> n.tier;
    ELSE
        EXECUTE '{LOOK_UP}' USING earliest;  -- planned with its value: the later changes, from the time index
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION scoring_customer_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN  -- a probe per customer and day, the days from the history's first to its last (its time index's two ends)
    EXECUTE 'DELETE FROM scoring_scorechange WHERE customer_id IN (SELECT id FROM old_rows)
             AND (at AT TIME ZONE ''UTC'')::date = ANY (ARRAY(
                 SELECT generate_series((min(at) AT TIME ZONE ''UTC'')::date, (max(at) AT TIME ZONE ''UTC'')::date,
                                        interval ''1 day'')::date
                 FROM scoring_scorechange))';
    RETURN NULL;
END $$;
"""

POSTGRESQL_REVERSE = f"""
{ONLY_WHEN_NEEDED.POSTGRESQL}

CREATE OR REPLACE FUNCTION scoring_customer_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM scoring_scorechange WHERE customer_id IN (SELECT id FROM old_rows);
    RETURN NULL;
END $$;
"""

# SQLite's trigger is a row's (migration 0019): its look-up of the customer's last change, from the time index too.
SQLITE = """CREATE TRIGGER scoring_score_changed AFTER UPDATE OF score, tier ON scoring_customerscore
    WHEN OLD.score IS NOT NEW.score OR OLD.tier IS NOT NEW.tier BEGIN
    INSERT INTO scoring_scorechange (customer_id, at, score, tier, previous_score, previous_tier, run_id)
    VALUES (NEW.customer_id,
            MAX(NEW.computed_at, COALESCE((SELECT MAX(c.at) FROM scoring_scorechange c
                                           WHERE c.at > NEW.computed_at AND c.customer_id = NEW.customer_id),
                                          NEW.computed_at)),
            NEW.score, NEW.tier, OLD.score, OLD.tier, NEW.run_id);
END"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRESQL, params=None)
    else:
        schema_editor.execute("DROP TRIGGER scoring_score_changed", params=None)
        schema_editor.execute(SQLITE, params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRESQL_REVERSE, params=None)
    else:
        schema_editor.execute("DROP TRIGGER scoring_score_changed", params=None)
        schema_editor.execute(IN_ORDER.SQLITE, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ("scoring", "0021_score_history_looked_up_only_when_needed"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="scorechange",
            index=models.Index(scoring.models.UTCDate("at"), models.F("customer"), name="score_change_day"),
        ),
        migrations.RemoveIndex(model_name="scorechange", name="score_change_customer"),
        migrations.AlterField(  # Django leaves the cascade to PostgreSQL's trigger (a change of Django's only)
            model_name="scorechange",
            name="customer",
            field=models.ForeignKey(
                db_constraint=False, db_index=False, on_delete=scoring.models.cascade_unless_postgresql,
                related_name="score_changes", to="scoring.customer",
            ),
        ),
        migrations.RunPython(forward, backward),
    ]
