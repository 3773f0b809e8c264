"""Offers survive staff edits: deleting a waitlist entry keeps its offers (their entry becomes NULL).

An accepted offer is what keeps its slot taken (a slot with no live offer counts as open); with the
old on_delete=CASCADE, deleting a closed waitlist entry deleted its accepted offer, and the slot was
offered again.

On PostgreSQL the database does what Django does, so that raw SQL deletes behave like the ORM's:
the offer's entry is set to NULL, and deleting its slot or its customer deletes the offer. The offer
runs check their foreign keys statement by statement (SET CONSTRAINTS ALL IMMEDIATE) and lock the rows
their offers point to, so a delete that comes meanwhile waits for the run; once the run commits, that
delete finds the run's fresh offers and, without these actions, would fail on them instead (as
migration 0003 explains for the scores). Django's own on_delete is unchanged for slot and customer.
On SQLite the foreign keys keep refusing a raw delete of a row that offers point to.

Backwards: the offers whose entry is gone are deleted, as the old CASCADE would have done.
"""

import django.db.models.deletion
from django.db import migrations, models

ACTIONS = """
DO $$
DECLARE fk record;
BEGIN
    FOR fk IN
        SELECT c.conname, a.attname AS column_name, c.confrelid::regclass AS target
        FROM pg_constraint c
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
        WHERE c.conrelid = 'scoring_slotoffer'::regclass AND c.contype = 'f'
    LOOP
        EXECUTE format('ALTER TABLE scoring_slotoffer DROP CONSTRAINT %I', fk.conname);
        EXECUTE format(
            'ALTER TABLE scoring_slotoffer ADD CONSTRAINT %I FOREIGN KEY (%I) REFERENCES %s (id) '
            'ON DELETE %s DEFERRABLE INITIALLY DEFERRED',
            fk.conname, fk.column_name, fk.target,
            CASE WHEN fk.column_name = 'entry_id' THEN '{entry}' ELSE '{others}' END
        );
    END LOOP;
END $$;
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(ACTIONS.format(entry="SET NULL", others="CASCADE"), params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(ACTIONS.format(entry="NO ACTION", others="NO ACTION"), params=None)
    apps.get_model("scoring", "SlotOffer").objects.filter(entry__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [("scoring", "0009_changes_log_and_window_edges")]

    operations = [
        migrations.AlterField(
            model_name="slotoffer",
            name="entry",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="offers",
                to="scoring.waitlistentry",
            ),
        ),
        migrations.RunPython(forwards, backwards),
    ]
