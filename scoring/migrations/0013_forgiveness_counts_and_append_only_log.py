"""Forgiveness in the scores, and the adjustment log append-only (scoring.adjustments).

- Forgiving or unforgiving a resolved appointment marks its customer, like a change of its outcome, whoever
  writes (the appointment-update trigger of 0009, with `forgiven` among the columns it compares).
- The two indexes recompute-scores reads alone carry `forgiven` as their last column, so that the scores,
  which leave forgiven appointments out, are still read from the index alone. The column fits in the
  alignment padding of their entries: the indexes do not grow.
- The log's admin list, newest first, reads an index.
- The database refuses UPDATE and DELETE on scoring_adjustment (a trigger on each database). A TRUNCATE by
  the table's owner (PostgreSQL; the test suite's flush) is not refused.
"""

import importlib

from django.db import migrations, models

CHANGES = importlib.import_module("scoring.migrations.0009_changes_log_and_window_edges")

OLD_TUPLE = "(o.outcome, o.starts_at, o.customer_id) IS DISTINCT FROM (n.outcome, n.starts_at, n.customer_id)"
NEW_TUPLE = (
    "(o.outcome, o.starts_at, o.customer_id, o.forgiven)\n"
    "                  IS DISTINCT FROM (n.outcome, n.starts_at, n.customer_id, n.forgiven)"
)
assert OLD_TUPLE in CHANGES.POSTGRESQL
MARK_POSTGRESQL = CHANGES.POSTGRESQL.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION").replace(
    "-- an UPDATE: the customers of the rows whose outcome, start or customer changed",
    "-- an UPDATE: the customers of the rows whose outcome, start, customer or forgiveness changed",
).replace(OLD_TUPLE, NEW_TUPLE)
MARK_POSTGRESQL_REVERSE = CHANGES.POSTGRESQL.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION")

MARK_SQLITE = """CREATE TRIGGER scoring_appointment_updated AFTER UPDATE OF outcome, starts_at, customer_id, forgiven
    ON scoring_appointment
    WHEN (OLD.outcome <> 'pending' OR NEW.outcome <> 'pending')
     AND (OLD.outcome IS NOT NEW.outcome OR OLD.starts_at IS NOT NEW.starts_at
          OR OLD.customer_id IS NOT NEW.customer_id OR OLD.forgiven IS NOT NEW.forgiven) BEGIN
    INSERT INTO scoring_customerchange (customer_id) VALUES (OLD.customer_id);
    INSERT INTO scoring_customerchange (customer_id) SELECT NEW.customer_id WHERE NEW.customer_id IS NOT OLD.customer_id;
END"""
MARK_SQLITE_REVERSE = next(sql for sql in CHANGES.SQLITE if "scoring_appointment_updated" in sql)

REFUSED = "scoring_adjustment is append-only: % refused (add a new entry instead)"
LOG_POSTGRESQL = f"""
CREATE FUNCTION scoring_adjustment_refused() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{REFUSED}', TG_OP USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER scoring_adjustment_append_only BEFORE UPDATE OR DELETE ON scoring_adjustment
    FOR EACH STATEMENT EXECUTE FUNCTION scoring_adjustment_refused();
"""
LOG_POSTGRESQL_REVERSE = """
DROP TRIGGER scoring_adjustment_append_only ON scoring_adjustment;
DROP FUNCTION scoring_adjustment_refused();
"""
LOG_SQLITE = [
    f"""CREATE TRIGGER scoring_adjustment_no_{op.lower()} BEFORE {op} ON scoring_adjustment BEGIN
        SELECT RAISE(ABORT, '{REFUSED.replace("%", op)}');
    END"""
    for op in ("UPDATE", "DELETE")
]


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(MARK_POSTGRESQL + LOG_POSTGRESQL, params=None)
    else:
        schema_editor.execute("DROP TRIGGER scoring_appointment_updated", params=None)
        for statement in [MARK_SQLITE, *LOG_SQLITE]:
            schema_editor.execute(statement, params=None)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(MARK_POSTGRESQL_REVERSE + LOG_POSTGRESQL_REVERSE, params=None)
    else:
        for name in ("scoring_appointment_updated", "scoring_adjustment_no_update", "scoring_adjustment_no_delete"):
            schema_editor.execute(f"DROP TRIGGER {name}", params=None)
        schema_editor.execute(MARK_SQLITE_REVERSE, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ("scoring", "0012_adjustments"),
    ]

    operations = [
        migrations.RunPython(create, drop),
        migrations.RemoveIndex(model_name="appointment", name="appt_customer_window"),
        migrations.AddIndex(
            model_name="appointment",
            index=models.Index(fields=["customer", "starts_at", "outcome", "forgiven"], name="appt_customer_window"),
        ),
        migrations.RemoveIndex(model_name="appointment", name="appt_window_edge"),
        migrations.AddIndex(
            model_name="appointment",
            index=models.Index(
                condition=models.Q(("outcome", "pending"), _negated=True),
                fields=["starts_at", "customer", "outcome", "forgiven"],
                name="appt_window_edge",
            ),
        ),
        migrations.AddIndex(
            model_name="adjustment",
            index=models.Index(fields=["-at", "-id"], name="adjustment_newest_first"),
        ),
    ]
