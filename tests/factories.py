"""factory_boy factories for the catalogue."""

from __future__ import annotations

import factory

from collections_app.models import Artist, Artwork, Detail, DetailLevel


class ArtistFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Artist

    name = factory.Sequence(lambda n: f"Painter {n}")
    sort_name = factory.SelfAttribute("name")


class ArtworkFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Artwork

    source = "test"
    source_id = factory.Sequence(lambda n: f"T{n:05d}")
    title = factory.Sequence(lambda n: f"Artwork {n}")
    date_begin = 1500
    date_end = 1510
    classification = "Painting"


class DetailFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Detail

    artwork = factory.SubFactory(ArtworkFactory)
    level = DetailLevel.ENTITY
    x, y, w, h = 0.1, 0.1, 0.3, 0.3
    label = "halo"
    confidence = 0.8
    model_key = "test-detector@1"
