"""GIN indexes for the full-text leg of the search (search_app.retrieval.lexical_leg), so its cost follows
the rows that match instead of the collection's size: a detail's label and caption, an artwork's own text
columns, and artist names. Expression indexes: the leg's queries repeat these exact expressions."""

from django.db import migrations

INDEXES = {
    "detail_text_fts": (
        "collections_app_detail",
        "to_tsvector('english'::regconfig, replace(label, '_', ' ') || ' ' || caption)",
    ),
    "artwork_own_text_fts": (
        "collections_app_artwork",
        "to_tsvector('english'::regconfig, coalesce(title, '') || ' ' || coalesce(description, '') || ' ' "
        "|| coalesce(medium, '') || ' ' || coalesce(classification, '') || ' ' || coalesce(collection, ''))",
    ),
    "artist_name_fts": ("collections_app_artist", "to_tsvector('english'::regconfig, name)"),
}


class Migration(migrations.Migration):
    dependencies = [("collections_app", "0002_roles")]

    operations = [
        migrations.RunSQL(
            f"CREATE INDEX IF NOT EXISTS {name} ON {table} USING gin (({expression}))",
            reverse_sql=f"DROP INDEX IF EXISTS {name}",
        )
        for name, (table, expression) in INDEXES.items()
    ]
