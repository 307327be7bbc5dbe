"""The catalogue: artists, artworks, the details extracted from them, their embeddings and processing state.

Embeddings are tagged with the model that made them (``model_key``) and their dimension, so vectors of two
models never mix: a model change is a re-embed, not a migration. Approximate (HNSW) indexes are partial
per model and dimension, created by ``collections_app.vector_indexes``.
"""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from pgvector.django import HalfVectorField

from collections_app.iconography import validate_notations
from collections_app.querysets import ArtworkQuerySet, DetailQuerySet

UNIT = [MinValueValidator(0.0), MaxValueValidator(1.0)]


class TimeStamped(models.Model):
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class Artist(TimeStamped):
    name = models.CharField(max_length=300)
    sort_name = models.CharField(max_length=300, blank=True)
    nationality = models.CharField(max_length=120, blank=True)
    birth_year = models.IntegerField(null=True, blank=True)
    death_year = models.IntegerField(null=True, blank=True)
    source = models.CharField(max_length=60, default="local")
    source_id = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["sort_name", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["source", "source_id"], condition=~Q(source_id=""), name="artist_source_id_unique"
            ),
            models.UniqueConstraint(
                fields=["source", "name"], condition=Q(source_id=""), name="artist_name_unique"
            ),
        ]
        indexes = [GinIndex(fields=["name"], name="artist_name_trgm", opclasses=["gin_trgm_ops"])]

    def __str__(self) -> str:
        return self.name


class ProcessingStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    PROCESSING = "processing", "Processing"
    PROCESSED = "processed", "Processed"
    FAILED = "failed", "Failed"


class Artwork(TimeStamped):
    # (source, source_id) identifies a record in the collection it came from: re-imports update it.
    source = models.CharField(max_length=60, default="local")
    source_id = models.CharField(max_length=200)
    accession_number = models.CharField(max_length=120, blank=True)
    title = models.CharField(max_length=1000, blank=True)
    artists = models.ManyToManyField(Artist, related_name="artworks", blank=True)
    display_date = models.CharField(max_length=200, blank=True)
    date_begin = models.IntegerField(null=True, blank=True, help_text="Earliest year (negative for BCE).")
    date_end = models.IntegerField(null=True, blank=True, help_text="Latest year.")
    medium = models.CharField(max_length=1000, blank=True)
    classification = models.CharField(max_length=200, blank=True)
    collection = models.CharField(max_length=300, blank=True)
    dimensions = models.CharField(max_length=500, blank=True)
    description = models.TextField(blank=True)
    credit_line = models.CharField(max_length=1000, blank=True)
    licence = models.CharField(max_length=300, blank=True)
    source_url = models.URLField(max_length=1000, blank=True)
    iiif_url = models.URLField(
        max_length=1000, blank=True, help_text="IIIF Image API service base URL (without /full/...)."
    )
    image_url = models.URLField(max_length=1000, blank=True, help_text="Direct URL of the image file.")
    image = models.ImageField(upload_to="artworks/%Y/%m/", blank=True, max_length=500)
    image_sha256 = models.CharField(max_length=64, blank=True, editable=False)
    width = models.PositiveIntegerField(null=True, blank=True, editable=False)
    height = models.PositiveIntegerField(null=True, blank=True, editable=False)
    thumbnail = models.ImageField(upload_to="thumbnails/", blank=True, editable=False, max_length=500)
    working_image = models.ImageField(upload_to="working/", blank=True, editable=False, max_length=500)
    iconclass = ArrayField(
        models.CharField(max_length=300), default=list, blank=True, validators=[validate_notations]
    )
    status = models.CharField(
        max_length=20, choices=ProcessingStatus.choices, default=ProcessingStatus.PENDING, db_index=True
    )
    extra = models.JSONField(default=dict, blank=True, help_text="Source fields with no column of their own.")

    objects = ArtworkQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["source", "source_id"], name="artwork_source_id_unique"),
            models.CheckConstraint(
                condition=Q(date_begin__isnull=True)
                | Q(date_end__isnull=True)
                | Q(date_begin__lte=models.F("date_end")),
                name="artwork_date_range_ordered",
            ),
        ]
        indexes = [
            models.Index(fields=["date_begin", "date_end"], name="artwork_dates"),
            models.Index(fields=["classification"], name="artwork_classification"),
            GinIndex(fields=["iconclass"], name="artwork_iconclass"),
            GinIndex(fields=["title"], name="artwork_title_trgm", opclasses=["gin_trgm_ops"]),
        ]

    def __str__(self) -> str:
        return self.title or f"{self.source}:{self.source_id}"

    @property
    def artist_names(self) -> str:
        return ", ".join(a.name for a in self.artists.all())

    def has_image_source(self) -> bool:
        return bool(self.image or self.iiif_url or self.image_url)


class DetailLevel(models.TextChoices):
    ENTITY = "entity", "Entity"
    GROUP = "group", "Group"
    SCENE = "scene", "Scene"


class ReviewState(models.TextChoices):
    UNREVIEWED = "unreviewed", "Unreviewed"
    APPROVED = "approved", "Approved"
    CORRECTED = "corrected", "Corrected"
    HIDDEN = "hidden", "Hidden"


class Detail(TimeStamped):
    """A region of an artwork: an entity (a hand, a lily), a group of entities, or a scene of groups.

    The box is relative to the image (0..1) so it survives resizing; ``angle`` rotates it about its centre.
    """

    artwork = models.ForeignKey(Artwork, on_delete=models.CASCADE, related_name="details")
    level = models.CharField(max_length=10, choices=DetailLevel.choices, db_index=True)
    x = models.FloatField(validators=UNIT)
    y = models.FloatField(validators=UNIT)
    w = models.FloatField(validators=UNIT)
    h = models.FloatField(validators=UNIT)
    angle = models.FloatField(default=0.0, help_text="Rotation in degrees, clockwise, about the box centre.")
    polygon = models.JSONField(
        null=True, blank=True, help_text="Optional mask outline: [[x, y], ...] relative to the image."
    )
    parents = models.ManyToManyField("self", symmetrical=False, related_name="children", blank=True)
    label = models.CharField(max_length=300, blank=True)
    caption = models.TextField(blank=True)
    confidence = models.FloatField(default=0.0, validators=UNIT)
    # Spatial relations to other details of the same artwork, as data:
    # [{"relation": "left_of" | "above" | "next_to" | "holding" | "facing" | ..., "object": <detail id>}]
    relations = models.JSONField(default=list, blank=True)
    iconclass = ArrayField(
        models.CharField(max_length=300), default=list, blank=True, validators=[validate_notations]
    )
    model_key = models.CharField(
        max_length=120, help_text="The model (and version) that produced the detail."
    )
    review_state = models.CharField(
        max_length=12, choices=ReviewState.choices, default=ReviewState.UNREVIEWED, db_index=True
    )

    objects = DetailQuerySet.as_manager()

    class Meta:
        ordering = ["artwork", "level", "-confidence"]
        constraints = [
            models.CheckConstraint(
                condition=Q(x__gte=0)
                & Q(y__gte=0)
                & Q(w__gt=0)
                & Q(h__gt=0)
                & Q(x__lte=1)
                & Q(y__lte=1)
                & Q(w__lte=1)
                & Q(h__lte=1),
                name="detail_box_in_unit_square",
            ),
            # A small tolerance for floating-point rounding of boxes that touch the right or bottom edge.
            models.CheckConstraint(
                condition=Q(x__lte=1.0001 - models.F("w")) & Q(y__lte=1.0001 - models.F("h")),
                name="detail_box_inside_image",
            ),
            models.CheckConstraint(
                condition=Q(confidence__gte=0) & Q(confidence__lte=1), name="detail_confidence_unit"
            ),
        ]
        indexes = [
            models.Index(fields=["artwork", "level"], name="detail_artwork_level"),
            # The ICONCLASS leg finds tagged details through it (without: a scan of every detail).
            GinIndex(fields=["iconclass"], name="detail_iconclass"),
        ]

    def __str__(self) -> str:
        return f"{self.get_level_display()} {self.label or self.pk} of {self.artwork_id}"

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.w, self.h)


class Placement(models.Model):
    """Where the detector would show a thing it may see in the picture: one box a label, for the region a
    query naming that label outlines on its results. Only shown, never searched, grouped or captioned: the
    windows that place a thing best are not the ones that search best (docs/evaluation.md), so they are
    kept apart from the details. Replaced whenever the entities are re-detected."""

    artwork = models.ForeignKey(Artwork, on_delete=models.CASCADE, related_name="placements")
    label = models.CharField(max_length=300)
    x = models.FloatField(validators=UNIT)
    y = models.FloatField(validators=UNIT)
    w = models.FloatField(validators=UNIT)
    h = models.FloatField(validators=UNIT)
    confidence = models.FloatField(default=0.0, validators=UNIT)
    model_key = models.CharField(max_length=120, help_text="The model (and version) that placed it.")

    class Meta:
        ordering = ["artwork", "label"]
        constraints = [
            models.UniqueConstraint(fields=["artwork", "label"], name="placement_one_per_label"),
            models.CheckConstraint(
                condition=Q(x__gte=0)
                & Q(y__gte=0)
                & Q(w__gt=0)
                & Q(h__gt=0)
                & Q(x__lte=1.0001 - models.F("w"))
                & Q(y__lte=1.0001 - models.F("h")),
                name="placement_box_inside_image",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.label} placed in {self.artwork_id}"

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.w, self.h)


class EmbeddingKind(models.TextChoices):
    IMAGE = "image", "Image"  # the pixels (whole image or the detail's crop), through the image encoder
    TEXT = "text", "Text"  # the caption, through the text encoder


class EmbeddingBase(models.Model):
    """A vector in the joint image-text space of one model. Stored as halfvec: half the bytes of
    ``vector``, never TOASTed at 512-d, and recall equal to float32 for cosine search."""

    model_key = models.CharField(max_length=120)
    kind = models.CharField(max_length=8, choices=EmbeddingKind.choices)
    dim = models.PositiveSmallIntegerField()
    vector = HalfVectorField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True


class ArtworkEmbedding(EmbeddingBase):
    artwork = models.ForeignKey(Artwork, on_delete=models.CASCADE, related_name="embeddings")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["artwork", "model_key", "kind"], name="artwork_embedding_unique"),
        ]
        indexes = [
            models.Index(fields=["model_key", "kind"], name="artwork_embedding_model"),
            # The ids of one model's vectors, read from the index alone (FAISS's syncs count and list them).
            models.Index(fields=["model_key", "kind", "dim", "id"], name="artwork_embedding_ids"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} vector of artwork {self.artwork_id} ({self.model_key})"


class DetailEmbedding(EmbeddingBase):
    detail = models.ForeignKey(Detail, on_delete=models.CASCADE, related_name="embeddings")
    # Denormalised so a search over details filters by artwork fields without a join per candidate.
    artwork = models.ForeignKey(Artwork, on_delete=models.CASCADE, related_name="detail_embeddings")
    level = models.CharField(max_length=10, choices=DetailLevel.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["detail", "model_key", "kind"], name="detail_embedding_unique"),
        ]
        indexes = [
            models.Index(fields=["model_key", "kind", "level"], name="detail_embedding_model"),
            # The ids of one model's vectors, read from the index alone (FAISS's syncs count and list them).
            models.Index(fields=["model_key", "kind", "dim", "id"], name="detail_embedding_ids"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} vector of detail {self.detail_id} ({self.model_key})"


class Stage(models.TextChoices):
    FETCH = "fetch", "Fetch image"
    EMBED = "embed", "Whole-image embedding"
    ENTITIES = "entities", "Entities"
    GROUPS = "groups", "Groups"
    SCENES = "scenes", "Scenes"
    CAPTIONS = "captions", "Captions and detail embeddings"


class StageStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class ProcessingStep(models.Model):
    """One stage of one artwork's processing: what a cataloger sees in the jobs view."""

    artwork = models.ForeignKey(Artwork, on_delete=models.CASCADE, related_name="steps")
    stage = models.CharField(max_length=12, choices=Stage.choices)
    status = models.CharField(
        max_length=10, choices=StageStatus.choices, default=StageStatus.PENDING, db_index=True
    )
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    model_version = models.CharField(
        max_length=200, blank=True, help_text="Models whose output this stage holds."
    )
    task_id = models.CharField(max_length=64, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["artwork", "id"]
        constraints = [models.UniqueConstraint(fields=["artwork", "stage"], name="processing_step_unique")]
        indexes = [models.Index(fields=["stage", "status"], name="processing_step_stage_status")]

    def __str__(self) -> str:
        return f"{self.artwork_id} {self.stage}: {self.status}"
