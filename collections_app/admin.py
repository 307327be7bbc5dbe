"""The catalogers' admin: artworks with their details drawn over the image, review, reprocessing.

Every write a cataloger makes to a detail goes through ``services.detail_review`` so a correction is recorded
as one (the corrected details are training data for the detection head). Queuing goes through
``services.artwork_queue_processing``. Vectors are derived data: their admins are read-only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Count, Max, Min, QuerySet
from django.forms import ModelForm, NumberInput, Textarea, TextInput
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse
from django.templatetags.static import static
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from collections_app.models import (
    Artist,
    Artwork,
    ArtworkEmbedding,
    Detail,
    DetailEmbedding,
    Placement,
    ProcessingStep,
    ReviewState,
)
from collections_app.selectors import artwork_details
from collections_app.services import artwork_queue_processing, detail_review

# The admin index links the jobs view (admin_views.jobs_view) from its own template.
admin.site.index_template = "admin/collections_app/index.html"

PLACEHOLDER = "semart/admin/placeholder.svg"
REVIEWED_FIELDS = ("label", "caption", "x", "y", "w", "h")


# --- Images -------------------------------------------------------------------------------------------


def _iiif(artwork: Artwork, size: str) -> str:
    return f"{artwork.iiif_url.rstrip('/')}/full/{size}/0/default.jpg"


def artwork_thumbnail_url(artwork: Artwork) -> str:
    """The cheapest picture of the artwork for a list: thumbnail, then the image, then a placeholder."""
    if artwork.thumbnail:
        return artwork.thumbnail.url
    if artwork.image:
        return artwork.image.url
    if artwork.iiif_url:  # the IIIF server scales it; a remote image_url may be a full-size original
        return _iiif(artwork, "!160,160")
    return static(PLACEHOLDER)


def artwork_display_url(artwork: Artwork) -> str:
    """The picture the details are drawn over: boxes are relative (0..1), so any size of it fits them."""
    for field in (artwork.working_image, artwork.image):
        if field:
            return field.url
    if artwork.iiif_url:
        return _iiif(artwork, "!1024,1024")
    if artwork.image_url:
        return artwork.image_url
    if artwork.thumbnail:
        return artwork.thumbnail.url
    return ""


def detail_overlay_boxes(artwork: Artwork) -> list[dict[str, Any]]:
    """Each detail as CSS percentages for the overlay. Formatted here, not in the template, so a locale's
    decimal comma can never end up inside a style attribute."""
    boxes = []
    for d in artwork_details(artwork=artwork, include_hidden=True):
        boxes.append(
            {
                "id": d.pk,
                "level": d.level,
                "level_display": d.get_level_display(),
                "label": d.label,
                "caption": d.caption,
                "confidence": f"{d.confidence:.2f}",
                "review_state": d.review_state,
                "data_box": f"{d.x:.4f} {d.y:.4f} {d.w:.4f} {d.h:.4f}",
                "style": (
                    f"left:{d.x * 100:.3f}%;top:{d.y * 100:.3f}%;"
                    f"width:{d.w * 100:.3f}%;height:{d.h * 100:.3f}%;transform:rotate({d.angle:.2f}deg)"
                ),
            }
        )
    return boxes


# --- Filters ------------------------------------------------------------------------------------------


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def century_label(start: int) -> str:
    # The same convention as services.parse_year_range: the 15th century is 1400-1499.
    return f"{_ordinal(start // 100 + 1)} century" if start >= 0 else f"{_ordinal(-start // 100)} century BCE"


class DateRangeFilter(admin.ListFilter):
    """Artworks whose [date_begin, date_end] overlaps a century or a from/to range of years."""

    title = "date"
    template = "admin/collections_app/filters/date_range.html"
    parameters = ("year_from", "year_to")
    max_centuries = 40

    def __init__(self, request: HttpRequest, params: dict[str, Any], model: Any, model_admin: Any) -> None:
        super().__init__(request, params, model, model_admin)
        self.years: dict[str, int] = {}
        for name in self.parameters:
            if name not in params:
                continue
            raw = params.pop(name)
            value = (raw[-1] if isinstance(raw, list) else raw).strip()
            self.used_parameters[name] = value
            try:
                self.years[name] = int(value)
            except ValueError:
                # A typo in a year should not cost the cataloger the rest of the list: say so, ignore it.
                messages.warning(request, f"“{value}” is not a year; the date filter ignores it.")
        self.centuries = self._centuries(model)

    def _centuries(self, model: Any) -> list[tuple[int, int]]:
        bounds = model.objects.aggregate(lo=Min("date_begin"), hi=Max("date_end"))
        if bounds["lo"] is None or bounds["hi"] is None:
            return []
        first, last = bounds["lo"] // 100, bounds["hi"] // 100
        if last - first >= self.max_centuries:
            return []  # too wide to list; the from/to form still works
        return [(c * 100, c * 100 + 99) for c in range(first, last + 1)]

    def has_output(self) -> bool:
        return True

    def expected_parameters(self) -> list[str | None]:
        return list(self.parameters)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Artwork]) -> QuerySet[Artwork]:
        if not self.years:
            return queryset
        return queryset.filter_catalogue(  # type: ignore[attr-defined]
            year_from=self.years.get("year_from"), year_to=self.years.get("year_to")
        )

    def choices(self, changelist: Any) -> Iterator[dict[str, Any]]:
        # The admin lists the choices before rendering the template, which reads the form's state from here.
        self.form = self.form_context(changelist)
        yield {
            "selected": not self.years,
            "query_string": changelist.get_query_string(remove=list(self.parameters)),
            "display": "All",
        }
        for start, end in self.centuries:
            yield {
                "selected": self.years == {"year_from": start, "year_to": end},
                "query_string": changelist.get_query_string({"year_from": start, "year_to": end}),
                "display": century_label(start),
            }

    def form_context(self, changelist: Any) -> dict[str, Any]:
        keep = {k: v for k, v in changelist.params.items() if k not in self.parameters and k != "p"}
        return {
            "keep": keep,
            "year_from": self.used_parameters.get("year_from", ""),
            "year_to": self.used_parameters.get("year_to", ""),
        }


class ArtistFilter(admin.SimpleListFilter):
    """The most represented artists; any artist id works in the URL (the artist admin links here)."""

    title = "artist"
    parameter_name = "artist"
    shown = 30

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        top = Artist.objects.annotate(n=Count("artworks")).filter(n__gt=0).order_by("-n", "name")
        top = top[: self.shown]
        choices = [(str(a.pk), a.name) for a in top]
        chosen = self.value()
        if chosen and chosen.isdigit() and chosen not in {c[0] for c in choices}:
            artist = Artist.objects.filter(pk=int(chosen)).first()
            if artist:
                choices.append((chosen, artist.name))
        return choices

    def queryset(self, request: HttpRequest, queryset: QuerySet[Artwork]) -> QuerySet[Artwork]:
        value = self.value()
        if not value:
            return queryset
        if not value.isdigit():
            messages.warning(request, f"“{value}” is not an artist id; the artist filter ignores it.")
            return queryset
        return queryset.filter(artists__pk=int(value))


# --- Detail review ------------------------------------------------------------------------------------


def review_detail_from_form(form: ModelForm) -> Detail:
    """Save a cataloger's edit of a detail through ``detail_review``.

    Editing the label, caption or box marks the detail corrected (unless it is being hidden). The form has
    already written the new values onto its instance; the service needs the old ones to see what changed.
    """
    detail: Detail = form.instance
    cleaned = form.cleaned_data
    edited = [f for f in REVIEWED_FIELDS if f in form.changed_data]
    state = cleaned.get("review_state", detail.review_state)
    if edited and state != ReviewState.HIDDEN:
        state = ReviewState.APPROVED  # detail_review turns "approved with changes" into "corrected"
    for name in edited:
        setattr(detail, name, form.initial[name])
    box_edited = any(f in edited for f in ("x", "y", "w", "h"))
    return detail_review(
        detail=detail,
        state=state,
        label=cleaned["label"] if "label" in edited else None,
        caption=cleaned["caption"] if "caption" in edited else None,
        box=(cleaned["x"], cleaned["y"], cleaned["w"], cleaned["h"]) if box_edited else None,
    )


class DetailInlineFormSet(BaseInlineFormSet):
    def save(self, commit: bool = True) -> list[Detail]:
        # Collects changed_objects for the admin's change message without saving; the admin saves each
        # changed detail through the review service.
        return super().save(commit=False)


class DetailInline(admin.TabularInline):
    model = Detail
    formset = DetailInlineFormSet
    # Compact rows: an artwork has dozens of details and the reviewer compares them with the boxes above.
    formfield_overrides = {
        models.CharField: {"widget": TextInput(attrs={"size": 16})},
        models.TextField: {"widget": Textarea(attrs={"rows": 2, "cols": 32})},
        models.FloatField: {"widget": NumberInput(attrs={"step": "any", "class": "semart-unit"})},
    }
    # The review state comes first: it is what a reviewer changes most, and the row is wide.
    fields = ("level", "review_state", "label", "caption", "x", "y", "w", "h", "score", "model_key")
    readonly_fields = ("level", "score", "model_key")
    ordering = ("level", "-confidence")
    extra = 0
    can_delete = False  # hiding keeps the model's output for training; deleting would lose it
    show_change_link = True
    classes = ("semart-details",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="confidence")
    def score(self, obj: Detail) -> str:
        return f"{obj.confidence:.2f}"


class PlacementInline(admin.TabularInline):
    """Where the detector places each label it found (shown for a query naming the label): made by the
    pipeline, replaced on re-detection, so read-only here."""

    model = Placement
    fields = ("label", "x", "y", "w", "h", "confidence", "model_key")
    readonly_fields = fields
    extra = 0
    can_delete = False
    classes = ("collapse",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ProcessingStepInline(admin.TabularInline):
    model = ProcessingStep
    fields = ("stage", "status", "attempts", "last_error", "model_version", "queued_at", "finished_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- Artworks -----------------------------------------------------------------------------------------


def _queue(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Artwork], **kwargs: Any
) -> int:
    ids = list(queryset.values_list("pk", flat=True))
    without_image = queryset.filter(image="", iiif_url="", image_url="").count()
    queued = artwork_queue_processing(artwork_ids=ids, force=True, **kwargs)
    if without_image:
        modeladmin.message_user(
            request,
            f"{without_image} of them have no image yet; their processing will fail.",
            messages.WARNING,
        )
    return queued


@admin.action(description="Reprocess selected artworks (all stages)", permissions=["change"])
def reprocess(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Artwork]) -> None:
    n = _queue(modeladmin, request, queryset)
    modeladmin.message_user(request, f"Queued {n} artwork(s) for reprocessing.", messages.SUCCESS)


@admin.action(description="Re-embed selected artworks (image and detail embeddings)", permissions=["change"])
def reembed(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Artwork]) -> None:
    n = _queue(modeladmin, request, queryset, stages=["embed", "captions"])
    modeladmin.message_user(request, f"Queued {n} artwork(s) for re-embedding.", messages.SUCCESS)


@admin.action(description="Export selected as CSV", permissions=["view"])
def export_csv(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Artwork]
) -> HttpResponse:
    from collections_app.exports import artworks_csv_write  # cells starting like formulas are neutralised

    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="artworks.csv"'
    artworks_csv_write(artworks=queryset.prefetch_related("artists").order_by("pk"), stream=response)
    return response


class ArtworkForm(ModelForm):
    def clean_image(self) -> Any:
        """Django's own check passes a truncated JPEG: decode it as every other way in does, so a broken
        upload is refused before it replaces the stored picture."""
        from django.core.files.uploadedfile import UploadedFile

        from collections_app.importers.images import ImageRejected, image_bytes_validated

        image = self.cleaned_data.get("image")
        if isinstance(image, UploadedFile):
            image.seek(0)
            try:
                image_bytes_validated(image.read())
            except ImageRejected as exc:
                raise ValidationError(str(exc)) from exc
            image.seek(0)
        return image


@admin.register(Artwork)
class ArtworkAdmin(admin.ModelAdmin):
    form = ArtworkForm
    list_display = (
        "thumb",
        "title_or_id",
        "artist_list",
        "date",
        "classification",
        "status",
        "detail_count",
    )
    list_display_links = ("thumb", "title_or_id")
    list_filter = (ArtistFilter, DateRangeFilter, "classification", "status", "source")
    search_fields = ("title", "source_id", "accession_number", "artists__name", "description")
    list_per_page = 50
    actions = [reprocess, reembed, export_csv]
    autocomplete_fields = ("artists",)
    inlines = [DetailInline, PlacementInline, ProcessingStepInline]
    readonly_fields = ("status", "width", "height", "image_sha256", "created_at", "updated_at")
    fieldsets = (
        (
            None,
            {"fields": ("title", "artists", "display_date", ("date_begin", "date_end"), "classification")},
        ),
        (
            "Record",
            {
                "fields": (
                    ("source", "source_id"),
                    "accession_number",
                    "collection",
                    "medium",
                    "dimensions",
                    "description",
                    "credit_line",
                    "licence",
                    "source_url",
                    "iconclass",
                )
            },
        ),
        ("Image", {"fields": ("image", "iiif_url", "image_url", ("width", "height"), "image_sha256")}),
        ("Processing", {"fields": ("status", "created_at", "updated_at"), "classes": ("collapse",)}),
    )

    class Media:
        css = {"all": ("semart/admin/details.css",)}
        js = ("semart/admin/details.js",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Artwork]:
        return super().get_queryset(request).prefetch_related("artists").annotate(n_details=Count("details"))

    @admin.display(description="")
    def thumb(self, obj: Artwork) -> str:
        return format_html(
            '<img class="semart-thumb" src="{}" alt="" loading="lazy" width="64" height="64">',
            artwork_thumbnail_url(obj),
        )

    @admin.display(description="title", ordering="title")
    def title_or_id(self, obj: Artwork) -> str:
        return obj.title or f"({obj.source}:{obj.source_id})"

    @admin.display(description="artists")
    def artist_list(self, obj: Artwork) -> str:
        return Truncator(obj.artist_names).chars(80)

    @admin.display(description="date", ordering="date_begin")
    def date(self, obj: Artwork) -> str:
        if obj.display_date:
            return obj.display_date
        if obj.date_begin is None and obj.date_end is None:
            return ""
        if obj.date_begin == obj.date_end or obj.date_end is None:
            return str(obj.date_begin)
        return f"{obj.date_begin if obj.date_begin is not None else '?'}–{obj.date_end}"

    @admin.display(description="details", ordering="n_details")
    def detail_count(self, obj: Artwork) -> int:
        return obj.n_details  # type: ignore[attr-defined]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        artwork = self.get_object(request, object_id)
        if artwork is not None:
            extra_context = {
                **(extra_context or {}),
                "overlay_image_url": artwork_display_url(artwork),
                "overlay_boxes": detail_overlay_boxes(artwork),
            }
        return super().change_view(request, object_id, form_url, extra_context)

    def save_model(self, request: HttpRequest, obj: Artwork, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        image_changed = bool({"image", "iiif_url", "image_url"} & set(form.changed_data))
        if image_changed and obj.has_image_source() and settings.SEMART_PROCESS_ON_SAVE:
            # A new picture makes every derived detail and vector stale: the same rule as a re-import.
            artwork_queue_processing(artwork_ids=[obj.pk], force=change)
            self.message_user(request, "The image changed: the artwork is queued for processing.")

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is not Detail:
            super().save_formset(request, form, formset, change)
            return
        formset.save()
        for detail_form in formset.initial_forms:
            if detail_form.has_changed():
                review_detail_from_form(detail_form)


# --- Details, artists, processing ---------------------------------------------------------------------


@admin.action(description="Approve selected details", permissions=["change"])
def approve_details(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Detail]) -> None:
    _review_many(modeladmin, request, queryset, ReviewState.APPROVED, "Approved")


@admin.action(description="Hide selected details from visitors", permissions=["change"])
def hide_details(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Detail]) -> None:
    _review_many(modeladmin, request, queryset, ReviewState.HIDDEN, "Hid")


def _review_many(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Detail], state: str, verb: str
) -> None:
    done, refused = 0, []
    for detail in queryset:
        try:
            detail_review(detail=detail, state=state)
            done += 1
        except ValidationError as exc:  # an invalid stored detail is reported, the others still go through
            refused.append(f"{detail.pk}: {'; '.join(exc.messages)}")
    modeladmin.message_user(request, f"{verb} {done} detail(s).", messages.SUCCESS)
    if refused:
        modeladmin.message_user(request, "Not changed: " + " | ".join(refused), messages.ERROR)


@admin.register(Detail)
class DetailAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "artwork",
        "level",
        "label",
        "short_caption",
        "confidence",
        "review_state",
        "model_key",
    )
    list_display_links = ("id", "label")
    list_filter = ("level", "review_state", "model_key")
    search_fields = ("label", "caption", "artwork__title", "artwork__source_id")
    list_select_related = ("artwork",)
    autocomplete_fields = ("artwork", "parents")
    actions = [approve_details, hide_details]
    readonly_fields = ("created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("artwork", "level", "label", "caption", "review_state")}),
        ("Box (relative to the image, 0..1)", {"fields": (("x", "y", "w", "h"), "angle", "polygon")}),
        ("Structure", {"fields": ("parents", "relations", "iconclass")}),
        ("Provenance", {"fields": ("confidence", "model_key", "created_at", "updated_at")}),
    )

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        # A detail drawn by hand is credited to the cataloger, not to a model.
        return {"model_key": "cataloger", "confidence": 1.0, **super().get_changeform_initial_data(request)}

    @admin.display(description="caption")
    def short_caption(self, obj: Detail) -> str:
        return Truncator(obj.caption).chars(80)

    def save_model(self, request: HttpRequest, obj: Detail, form: Any, change: bool) -> None:
        if change:
            review_detail_from_form(form)
        else:
            super().save_model(request, obj, form, change)


@admin.register(Artist)
class ArtistAdmin(admin.ModelAdmin):
    list_display = ("name", "nationality", "birth_year", "death_year", "artworks_link")
    search_fields = ("name", "sort_name")
    list_filter = ("source",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Artist]:
        return super().get_queryset(request).annotate(n_artworks=Count("artworks"))

    @admin.display(description="artworks", ordering="n_artworks")
    def artworks_link(self, obj: Artist) -> str:
        url = reverse("admin:collections_app_artwork_changelist")
        return format_html('<a href="{}?artist={}">{}</a>', url, obj.pk, obj.n_artworks)  # type: ignore[attr-defined]


class ReadOnlyAdmin(admin.ModelAdmin):
    """Derived data: shown to catalogers, changed only by the pipeline."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ProcessingStep)
class ProcessingStepAdmin(ReadOnlyAdmin):
    list_display = ("artwork", "stage", "status", "attempts", "short_error", "model_version", "updated_at")
    list_filter = ("status", "stage")
    search_fields = ("artwork__title", "artwork__source_id", "last_error")
    list_select_related = ("artwork",)

    @admin.display(description="last error")
    def short_error(self, obj: ProcessingStep) -> str:
        return Truncator(obj.last_error).chars(100)


class EmbeddingAdmin(ReadOnlyAdmin):
    # The vector itself is hundreds of numbers nobody reads; its model and size are what matter.
    list_filter = ("model_key", "kind")
    list_select_related = ("artwork",)
    exclude = ("vector",)


@admin.register(ArtworkEmbedding)
class ArtworkEmbeddingAdmin(EmbeddingAdmin):
    list_display = ("artwork", "model_key", "kind", "dim", "created_at")
    fields = ("artwork", "model_key", "kind", "dim", "created_at")
    readonly_fields = fields


@admin.register(DetailEmbedding)
class DetailEmbeddingAdmin(EmbeddingAdmin):
    list_display = ("detail", "artwork", "level", "model_key", "kind", "dim", "created_at")
    list_select_related = ("artwork", "detail")  # type: ignore[assignment]
    list_filter = ("model_key", "kind", "level")  # type: ignore[assignment]
    fields = ("detail", "artwork", "level", "model_key", "kind", "dim", "created_at")
    readonly_fields = fields
