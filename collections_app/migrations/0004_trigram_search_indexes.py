"""Trigram GIN indexes for the full-text leg's fallback (search_app.retrieval.trigram_leg: misspellings and
names that match no word), so it no longer computes word_similarity for every artwork and detail. The
fallback's queries repeat these exact expressions with the ``<%`` operator."""

from django.db import migrations

INDEXES = {
    "detail_text_trgm": ("collections_app_detail", "replace(label, '_', ' ') || ' ' || caption"),
    "artwork_title_description_trgm": ("collections_app_artwork", "title || ' ' || description"),
}


class Migration(migrations.Migration):
    dependencies = [("collections_app", "0003_text_search_indexes")]

    operations = [
        migrations.RunSQL(
            f"CREATE INDEX IF NOT EXISTS {name} ON {table} USING gin (({expression}) gin_trgm_ops)",
            reverse_sql=f"DROP INDEX IF EXISTS {name}",
        )
        for name, (table, expression) in INDEXES.items()
    ]
