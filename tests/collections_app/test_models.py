import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from collections_app.models import Artwork, ArtworkEmbedding, Detail, DetailLevel
from tests.factories import ArtworkFactory, DetailFactory

pytestmark = pytest.mark.django_db


def test_source_id_is_unique_per_source():
    ArtworkFactory(source="nga", source_id="1")
    ArtworkFactory(source="aic", source_id="1")
    with pytest.raises(IntegrityError), transaction.atomic():
        ArtworkFactory(source="nga", source_id="1")


def test_date_range_must_be_ordered():
    with pytest.raises(IntegrityError), transaction.atomic():
        ArtworkFactory(date_begin=1600, date_end=1500)


@pytest.mark.parametrize("box", [(0.8, 0.1, 0.3, 0.2), (-0.1, 0.0, 0.2, 0.2), (0.1, 0.1, 0.0, 0.2)])
def test_detail_box_must_lie_inside_the_image(box):
    artwork = ArtworkFactory()
    x, y, w, h = box
    with pytest.raises(IntegrityError), transaction.atomic():
        Detail.objects.create(artwork=artwork, level="entity", x=x, y=y, w=w, h=h, model_key="m@1")


def test_box_touching_the_edge_is_accepted():
    detail = DetailFactory(x=0.7, y=0.0, w=0.3, h=1.0)
    assert detail.box == (0.7, 0.0, 0.3, 1.0)


def test_details_nest_entity_group_scene():
    artwork = ArtworkFactory()
    angel = DetailFactory(artwork=artwork, label="angel")
    lily = DetailFactory(artwork=artwork, label="lily")
    group = DetailFactory(artwork=artwork, level=DetailLevel.GROUP, label="angel holding lily")
    scene = DetailFactory(artwork=artwork, level=DetailLevel.SCENE, x=0, y=0, w=1, h=1, label="annunciation")
    group.children.add(angel, lily)
    scene.children.add(group)
    assert set(angel.parents.all()) == {group}
    assert list(group.parents.all()) == [scene]
    assert artwork.details.count() == 4


def test_iconclass_notations_are_validated():
    artwork = ArtworkFactory.build(iconclass=["11H(JEROME)", "not-a-notation"])
    with pytest.raises(ValidationError) as excinfo:
        artwork.full_clean()
    assert "not-a-notation" in str(excinfo.value)
    artwork.iconclass = ["11H(JEROME)", "73A5"]
    artwork.full_clean()


def test_embeddings_of_two_models_live_side_by_side():
    artwork = ArtworkFactory()
    ArtworkEmbedding.objects.create(artwork=artwork, model_key="a@1", kind="image", dim=3, vector=[1, 0, 0])
    ArtworkEmbedding.objects.create(
        artwork=artwork, model_key="b@1", kind="image", dim=4, vector=[0, 1, 0, 0]
    )
    assert artwork.embeddings.count() == 2
    with pytest.raises(IntegrityError), transaction.atomic():
        ArtworkEmbedding.objects.create(
            artwork=artwork, model_key="a@1", kind="image", dim=3, vector=[0, 0, 1]
        )
    assert Artwork.objects.count() == 1
