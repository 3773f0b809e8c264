"""On PostgreSQL, deleting a customer or a shop also deletes its scores in the database itself.

recompute-scores checks its foreign keys statement by statement (SET CONSTRAINTS ALL IMMEDIATE),
so a customer deleted while a run is scoring them waits for the run; once the run commits, the
delete would then find the run's fresh score row and fail. With ON DELETE CASCADE the delete
takes that row with it instead. Django's own cascade (on_delete=CASCADE) is unchanged.
"""

from django.db import migrations

CASCADE = """
DO $$
DECLARE fk record;
BEGIN
    FOR fk IN
        SELECT c.conname, a.attname AS column_name, c.confrelid::regclass AS target
        FROM pg_constraint c
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
        WHERE c.conrelid = 'scoring_customerscore'::regclass AND c.contype = 'f'
    LOOP
        EXECUTE format('ALTER TABLE scoring_customerscore DROP CONSTRAINT %I', fk.conname);
        EXECUTE format(
            'ALTER TABLE scoring_customerscore ADD CONSTRAINT %I FOREIGN KEY (%I) REFERENCES %s (id) '
            'ON DELETE {action} DEFERRABLE INITIALLY DEFERRED',
            fk.conname, fk.column_name, fk.target
        );
    END LOOP;
END $$;
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CASCADE.replace("{action}", "CASCADE"), params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CASCADE.replace("{action}", "NO ACTION"), params=None)


class Migration(migrations.Migration):
    dependencies = [("scoring", "0002_waitlist_and_offers")]

    operations = [migrations.RunPython(forwards, backwards)]
