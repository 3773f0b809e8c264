"""The score history's trigger finds the changed customers' last changes as one set (PostgreSQL).

Migration 0019 looked up each changed customer's last change with max(at), one look-up per changed score, in a plan
made once per session and kept. Planned on an empty history (a new installation, or all of it pruned) each look-up
was a sequential scan of the history, the rows the statement itself was appending included: quadratic. At 10M
appointments a day's incremental run took 11.5 s instead of 0.9 s, 8.9 s of it in one statement's trigger scanning
22,629 rows 9,758 times (auto_explain); on other statistics max(at) walked the history's time index backwards past
every other customer's recent changes, as slowly.

Now the last changes are one grouped query over the changed customers: a probe of the (customer, at) index each, or
one pass over the history, whatever the plan; no plan reads the history once per change. It is planned at each
statement (EXECUTE), from the history's size then rather than at the session's first (under a millisecond).
"""

import importlib

from django.db import migrations

IN_ORDER = importlib.import_module("scoring.migrations.0019_score_history_in_order")

# The changes, each dated after the customer's last: one statement, run by EXECUTE (planned at each run).
LOOK_UP = """
        WITH changed AS (
            SELECT n.customer_id, n.computed_at, n.score, n.tier, o.score AS previous_score,
                   o.tier AS previous_tier, n.run_id
            FROM new_rows n JOIN old_rows o ON o.customer_id = n.customer_id
            WHERE o.score <> n.score OR o.tier <> n.tier
        ), last AS (
            SELECT customer_id, max(at) AS at FROM scoring_scorechange
            WHERE customer_id IN (SELECT customer_id FROM changed) GROUP BY customer_id
        )
        INSERT INTO scoring_scorechange (customer_id, at, score, tier, previous_score, previous_tier, run_id)
        SELECT changed.customer_id, GREATEST(changed.computed_at, last.at), score, tier, previous_score,
               previous_tier, run_id
        FROM changed LEFT JOIN last ON last.customer_id = changed.customer_id"""

POSTGRESQL = f"""
CREATE OR REPLACE FUNCTION scoring_score_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN  -- only the rows whose score or tier changed (a run also rewrites a row whose counts alone changed)
    EXECUTE '{LOOK_UP}';
    RETURN NULL;
END $$;
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":  # SQLite's trigger is a row's: its look-up, an index's
        schema_editor.execute(POSTGRESQL, params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(IN_ORDER.POSTGRESQL, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ("scoring", "0019_score_history_in_order"),
    ]

    operations = [
        migrations.RunPython(forward, backward),
    ]
