"""The score history's cascade from the customer, on PostgreSQL, by a statement-level trigger on the customers
instead of a foreign key (migration 0014).

The foreign key checked every history row the scores' trigger appends, one lookup of its customer per row
(~12 us each): a third of what the history cost an incremental run, which changes thousands of scores. The
rows come from the scores, whose own key already holds their customer (migration 0003), so the check proved
nothing. What the key was for stays: deleting a customer, whoever deletes it (raw SQL too), deletes their
history, in the same statement. Django's own cascade is unchanged (the model never had a database constraint).
"""

from django.db import migrations

POSTGRESQL = """
ALTER TABLE scoring_scorechange DROP CONSTRAINT scoring_scorechange_customer;

CREATE FUNCTION scoring_customer_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM scoring_scorechange WHERE customer_id IN (SELECT id FROM old_rows);
    RETURN NULL;
END $$;

CREATE TRIGGER scoring_customer_deleted AFTER DELETE ON scoring_customer
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION scoring_customer_deleted();
"""

POSTGRESQL_REVERSE = """
DROP TRIGGER scoring_customer_deleted ON scoring_customer;
DROP FUNCTION scoring_customer_deleted();
DELETE FROM scoring_scorechange h WHERE NOT EXISTS (SELECT 1 FROM scoring_customer c WHERE c.id = h.customer_id);
ALTER TABLE scoring_scorechange ADD CONSTRAINT scoring_scorechange_customer FOREIGN KEY (customer_id)
    REFERENCES scoring_customer (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED;
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRESQL, params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRESQL_REVERSE, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ('scoring', '0016_booking_policy_and_evaluation'),
    ]

    operations = [
        migrations.RunPython(forward, backward),
    ]
