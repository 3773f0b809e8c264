"""A change of a score is dated no earlier than the customer's last recorded change (migration 0014's trigger dated
it by the score's computed_at alone).

A resumed full pass writes the scores of its later batches as of the time the pass began (so that the pass is one
snapshot: scores/_full_pass). A customer rescored since, by a run narrowed to their shop, then got a change dated
before the one that run recorded, and their history, read in time order, ended at a score they no longer had (found
by the history's property test: 40 -> 50 dated 12 July, written after 50 -> 40 dated 24 August, stored 50). The
history is now in the order it was written, each change dated at the later of its score's computed_at and the
customer's last change (one look-up of the (customer, at) index per changed row).
"""

from django.db import migrations

POSTGRESQL = """
CREATE OR REPLACE FUNCTION scoring_score_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN  -- only the rows whose score or tier changed (a run also rewrites a row whose counts alone changed)
    INSERT INTO scoring_scorechange (customer_id, at, score, tier, previous_score, previous_tier, run_id)
        SELECT n.customer_id, GREATEST(n.computed_at, last.at), n.score, n.tier, o.score, o.tier, n.run_id
        FROM new_rows n JOIN old_rows o ON o.customer_id = n.customer_id
        LEFT JOIN LATERAL (SELECT max(c.at) AS at FROM scoring_scorechange c WHERE c.customer_id = n.customer_id) last
            ON true
        WHERE o.score <> n.score OR o.tier <> n.tier;
    RETURN NULL;
END $$;
"""

POSTGRESQL_REVERSE = """
CREATE OR REPLACE FUNCTION scoring_score_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN  -- only the rows whose score or tier changed (a run also rewrites a row whose counts alone changed)
    INSERT INTO scoring_scorechange (customer_id, at, score, tier, previous_score, previous_tier, run_id)
        SELECT n.customer_id, n.computed_at, n.score, n.tier, o.score, o.tier, n.run_id
        FROM new_rows n JOIN old_rows o ON o.customer_id = n.customer_id
        WHERE o.score <> n.score OR o.tier <> n.tier;
    RETURN NULL;
END $$;
"""

# SQLite keeps a datetime as ISO text: the later of two is the greater.
SQLITE = """CREATE TRIGGER scoring_score_changed AFTER UPDATE OF score, tier ON scoring_customerscore
    WHEN OLD.score IS NOT NEW.score OR OLD.tier IS NOT NEW.tier BEGIN
    INSERT INTO scoring_scorechange (customer_id, at, score, tier, previous_score, previous_tier, run_id)
    VALUES (NEW.customer_id,
            MAX(NEW.computed_at, COALESCE((SELECT MAX(c.at) FROM scoring_scorechange c
                                           WHERE c.customer_id = NEW.customer_id), NEW.computed_at)),
            NEW.score, NEW.tier, OLD.score, OLD.tier, NEW.run_id);
END"""

SQLITE_REVERSE = """CREATE TRIGGER scoring_score_changed AFTER UPDATE OF score, tier ON scoring_customerscore
    WHEN OLD.score IS NOT NEW.score OR OLD.tier IS NOT NEW.tier BEGIN
    INSERT INTO scoring_scorechange (customer_id, at, score, tier, previous_score, previous_tier, run_id)
    VALUES (NEW.customer_id, NEW.computed_at, NEW.score, NEW.tier, OLD.score, OLD.tier, NEW.run_id);
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
        schema_editor.execute(SQLITE_REVERSE, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ("scoring", "0018_idle_offer_runs"),
    ]

    operations = [
        migrations.RunPython(forward, backward),
    ]
