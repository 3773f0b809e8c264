"""Triggers that mark a customer dirty whenever their score may change, whoever writes: the ORM, bulk
updates, raw SQL or another service. A new customer is marked too (they need a first score). See
scoring.models.DirtyCustomer.

PostgreSQL: statement-level triggers with transition tables, so a bulk insert of 100,000 appointments
marks its customers in one extra statement, not 100,000. SQLite: row-level triggers.
"""

from django.db import migrations

POSTGRESQL = """
CREATE SEQUENCE scoring_dirty_seq;

CREATE FUNCTION scoring_mark_dirty() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    mark bigint := nextval('scoring_dirty_seq');  -- one new value per statement: enough to tell marks apart
BEGIN
    IF TG_TABLE_NAME = 'scoring_customer' AND TG_OP = 'INSERT' THEN  -- a new customer needs a first score
        INSERT INTO scoring_dirtycustomer (customer_id, seq) SELECT id, mark FROM new_rows
        ON CONFLICT (customer_id) DO UPDATE SET seq = EXCLUDED.seq;
    ELSIF TG_TABLE_NAME = 'scoring_customer' THEN
        INSERT INTO scoring_dirtycustomer (customer_id, seq)
            SELECT n.id, mark FROM new_rows n JOIN old_rows o ON o.id = n.id
            WHERE o.shop_id IS DISTINCT FROM n.shop_id
        ON CONFLICT (customer_id) DO UPDATE SET seq = EXCLUDED.seq;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO scoring_dirtycustomer (customer_id, seq)
            SELECT DISTINCT customer_id, mark FROM new_rows
        ON CONFLICT (customer_id) DO UPDATE SET seq = EXCLUDED.seq;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO scoring_dirtycustomer (customer_id, seq)
            SELECT DISTINCT customer_id, mark FROM old_rows
        ON CONFLICT (customer_id) DO UPDATE SET seq = EXCLUDED.seq;
    ELSE  -- an UPDATE: the customers of the rows whose outcome, start or customer changed, before and after
        INSERT INTO scoring_dirtycustomer (customer_id, seq)
            SELECT DISTINCT unnest(ARRAY[o.customer_id, n.customer_id]), mark
            FROM new_rows n JOIN old_rows o ON o.id = n.id
            WHERE (o.outcome, o.starts_at, o.customer_id) IS DISTINCT FROM (n.outcome, n.starts_at, n.customer_id)
        ON CONFLICT (customer_id) DO UPDATE SET seq = EXCLUDED.seq;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER scoring_appointment_inserted AFTER INSERT ON scoring_appointment
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION scoring_mark_dirty();
CREATE TRIGGER scoring_appointment_updated AFTER UPDATE ON scoring_appointment
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION scoring_mark_dirty();
CREATE TRIGGER scoring_appointment_deleted AFTER DELETE ON scoring_appointment
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION scoring_mark_dirty();
CREATE TRIGGER scoring_customer_added AFTER INSERT ON scoring_customer
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION scoring_mark_dirty();
CREATE TRIGGER scoring_customer_moved AFTER UPDATE ON scoring_customer
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION scoring_mark_dirty();
"""

POSTGRESQL_REVERSE = """
DROP TRIGGER scoring_appointment_inserted ON scoring_appointment;
DROP TRIGGER scoring_appointment_updated ON scoring_appointment;
DROP TRIGGER scoring_appointment_deleted ON scoring_appointment;
DROP TRIGGER scoring_customer_added ON scoring_customer;
DROP TRIGGER scoring_customer_moved ON scoring_customer;
DROP FUNCTION scoring_mark_dirty();
DROP SEQUENCE scoring_dirty_seq;
"""

SQLITE = [
    """CREATE TRIGGER scoring_appointment_inserted AFTER INSERT ON scoring_appointment BEGIN
        INSERT OR IGNORE INTO scoring_dirtycustomer (customer_id, seq) VALUES (NEW.customer_id, 0);
    END""",
    """CREATE TRIGGER scoring_appointment_updated AFTER UPDATE OF outcome, starts_at, customer_id
        ON scoring_appointment
        WHEN OLD.outcome IS NOT NEW.outcome OR OLD.starts_at IS NOT NEW.starts_at
             OR OLD.customer_id IS NOT NEW.customer_id BEGIN
        INSERT OR IGNORE INTO scoring_dirtycustomer (customer_id, seq) VALUES (OLD.customer_id, 0);
        INSERT OR IGNORE INTO scoring_dirtycustomer (customer_id, seq) VALUES (NEW.customer_id, 0);
    END""",
    """CREATE TRIGGER scoring_appointment_deleted AFTER DELETE ON scoring_appointment BEGIN
        INSERT OR IGNORE INTO scoring_dirtycustomer (customer_id, seq) VALUES (OLD.customer_id, 0);
    END""",
    """CREATE TRIGGER scoring_customer_added AFTER INSERT ON scoring_customer BEGIN
        INSERT OR IGNORE INTO scoring_dirtycustomer (customer_id, seq) VALUES (NEW.id, 0);
    END""",
    """CREATE TRIGGER scoring_customer_moved AFTER UPDATE OF shop_id ON scoring_customer
        WHEN OLD.shop_id IS NOT NEW.shop_id BEGIN
        INSERT OR IGNORE INTO scoring_dirtycustomer (customer_id, seq) VALUES (NEW.id, 0);
    END""",
]
TRIGGERS = ["scoring_appointment_inserted", "scoring_appointment_updated", "scoring_appointment_deleted",
            "scoring_customer_added", "scoring_customer_moved"]  # fmt: skip


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRESQL, params=None)
    else:
        for statement in SQLITE:
            schema_editor.execute(statement, params=None)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRESQL_REVERSE, params=None)
    else:
        for name in TRIGGERS:
            schema_editor.execute(f"DROP TRIGGER {name}", params=None)


class Migration(migrations.Migration):
    dependencies = [("scoring", "0005_incremental_scores")]

    operations = [migrations.RunPython(create, drop)]
