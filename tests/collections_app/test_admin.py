"""The catalogers' admin against real PostgreSQL + pgvector and the real Redis broker (the test database)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.files.base import ContentFile
from django.db.models.fields.files import FieldFile
from django.test import Client
from django.urls import reverse

from collections_app.models import (
    ArtworkEmbedding,
    Detail,
    DetailLevel,
    ProcessingStep,
    ReviewState,
    Stage,
    StageStatus,
)
from tests.factories import ArtistFactory, ArtworkFactory, DetailFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:collections_app_artwork_changelist"


def change_url(artwork: Any) -> str:
    return reverse("admin:collections_app_artwork_change", args=[artwork.pk])


@pytest.fixture
def cataloger(django_user_model):  # type: ignore[no-untyped-def]
    user = django_user_model.objects.create_user(username="cataloger", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name="Cataloger"))
    return user


@pytest.fixture
def cataloger_client(cataloger) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(cataloger)
    return client


@pytest.fixture
def real_artwork(art_dev):  # type: ignore[no-untyped-def]
    """An art-dev icon with its labelled boxes stored as details: a real picture, real regions."""
    records = map(json.loads, (art_dev / "metadata.jsonl").read_text().splitlines())
    record = next(r for r in records if r["id"] == "A0270")
    artwork = ArtworkFactory(source="art-dev", source_id=record["id"], title=record["title"] or "Icon A0270")
    artwork.image.save("A0270.jpg", ContentFile((art_dev / record["image_file"]).read_bytes()))
    levels = [DetailLevel.ENTITY, DetailLevel.GROUP, DetailLevel.SCENE]
    for i, box in enumerate(record["boxes"][:12]):
        x, y, w, h = box["bbox_rel"]
        DetailFactory(
            artwork=artwork,
            level=levels[i % 3],
            x=x,
            y=y,
            w=min(w, 1 - x),
            h=min(h, 1 - y),
            label=box["label"],
            caption=f"a {box['label']} in the icon",
            confidence=0.5 + i / 40,
        )
    return artwork


def queued_messages(redis_client) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """Every Celery message waiting in the test Redis, decoded: {"queue", "task", "kwargs"}."""
    from workers.queues import ALL_QUEUES

    found = []
    for queue in ALL_QUEUES:
        for raw in redis_client.lrange(queue, 0, -1):
            envelope = json.loads(raw)
            body = envelope["body"]
            if envelope["properties"].get("body_encoding") == "base64":
                body = base64.b64decode(body)
            _args, kwargs, _embed = json.loads(body)
            found.append({"queue": queue, "task": envelope["headers"]["task"], "kwargs": kwargs})
    return found


def change_form_data(response) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """What the browser would post back from a change page it was shown, untouched."""
    data: dict[str, Any] = {}

    def add(form) -> None:  # type: ignore[no-untyped-def]
        for name, field in form.fields.items():
            value = form[name].value()
            if value is None or field.disabled or isinstance(value, FieldFile):
                continue  # a browser posts no file back unless one is chosen
            if hasattr(field, "base_field"):  # ArrayField's comma-separated widget
                value = field.prepare_value(value)
            if isinstance(value, list | tuple):
                data[form.add_prefix(name)] = [str(v) for v in value]
            else:
                data[form.add_prefix(name)] = value

    add(response.context["adminform"].form)
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        for name, value in formset.management_form.initial.items():
            data[formset.management_form.add_prefix(name)] = value
        for form in formset.forms:
            add(form)
    return data


def detail_row_prefix(response, detail: Detail) -> str:  # type: ignore[no-untyped-def]
    for inline in response.context["inline_admin_formsets"]:
        for form in inline.formset.forms:
            if form.instance.pk == detail.pk and isinstance(form.instance, Detail):
                return form.prefix
    raise AssertionError(f"detail {detail.pk} has no row on the change page")


# --- Roles and access ---------------------------------------------------------------------------------


def test_cataloger_role_can_describe_but_not_delete_or_manage_accounts():
    codenames = set(Group.objects.get(name="Cataloger").permissions.values_list("codename", flat=True))
    assert {"add_artwork", "change_artwork", "view_artwork", "change_detail", "add_artist"} <= codenames
    assert {"view_processingstep", "view_artworkembedding", "view_detailembedding"} <= codenames
    assert not {c for c in codenames if c.startswith("delete_")}
    assert "change_processingstep" not in codenames
    auth = Permission.objects.filter(content_type__app_label="auth").values_list("codename", flat=True)
    assert not codenames & set(auth)


@pytest.mark.parametrize(
    "url",
    [
        lambda: reverse("admin:index"),
        lambda: reverse(CHANGELIST),
        lambda: change_url(ArtworkFactory()),
        lambda: reverse("admin-jobs"),
    ],
    ids=["index", "changelist", "change", "jobs"],
)
def test_visitors_never_reach_the_admin(url, client, django_user_model):
    target = url()
    response = client.get(target)
    assert response.status_code == 302
    assert response.url.startswith(reverse("admin:login"))

    visitor = django_user_model.objects.create_user(username="visitor", password="pw")  # not staff
    client.force_login(visitor)
    response = client.get(target)
    assert response.status_code == 302
    assert response.url.startswith(reverse("admin:login"))


def test_cataloger_cannot_delete_artworks_or_open_accounts(cataloger_client):
    artwork = ArtworkFactory()
    response = cataloger_client.get(reverse("admin:collections_app_artwork_delete", args=[artwork.pk]))
    assert response.status_code == 403
    response = cataloger_client.post(
        reverse(CHANGELIST), {"action": "delete_selected", "_selected_action": [artwork.pk], "post": "yes"}
    )
    assert artwork.__class__.objects.filter(pk=artwork.pk).exists()
    assert cataloger_client.get(reverse("admin:auth_user_changelist")).status_code == 403


def test_admin_index_links_the_jobs_view(cataloger_client):
    response = cataloger_client.get(reverse("admin:index"))
    assert response.status_code == 200
    assert reverse("admin-jobs") in response.content.decode()


# --- Artwork list -------------------------------------------------------------------------------------


def test_changelist_shows_thumbnails_artists_dates_and_detail_counts(cataloger_client, art_dev):
    titian = ArtistFactory(name="Titian")
    with_thumb = ArtworkFactory(title="Venus with a mirror", display_date="c. 1555")
    with_thumb.artists.add(titian)
    with_thumb.thumbnail.save("venus.jpg", ContentFile((art_dev / "images" / "A0270.jpg").read_bytes()))
    DetailFactory.create_batch(3, artwork=with_thumb)
    iiif = ArtworkFactory(title="From a IIIF server", iiif_url="https://iiif.example.org/iiif/abc")
    bare = ArtworkFactory(title="Not yet photographed", date_begin=1600, date_end=1620)

    response = cataloger_client.get(reverse(CHANGELIST))
    html = response.content.decode()
    assert response.status_code == 200
    assert with_thumb.thumbnail.url in html
    assert "https://iiif.example.org/iiif/abc/full/!160,160/0/default.jpg" in html
    assert "semart/admin/placeholder.svg" in html
    assert "Titian" in html and "c. 1555" in html and "1600–1620" in html
    counts = {a.pk: a.n_details for a in response.context["cl"].result_list}
    assert counts == {with_thumb.pk: 3, iiif.pk: 0, bare.pk: 0}


def test_changelist_filters_by_century_years_artist_and_searches_artist_names(cataloger_client):
    early = ArtworkFactory(title="Early", date_begin=1480, date_end=1510)  # straddles two centuries
    late = ArtworkFactory(title="Late", date_begin=1650, date_end=1660)
    undated = ArtworkFactory(title="Undated", date_begin=None, date_end=None)
    giotto = ArtistFactory(name="Giotto di Bondone")
    late.artists.add(giotto)

    def shown(**params: Any) -> set[int]:
        response = cataloger_client.get(reverse(CHANGELIST), params)
        assert response.status_code == 200
        return {a.pk for a in response.context["cl"].result_list}

    assert shown(year_from=1500, year_to=1599) == {early.pk}
    assert shown(year_from=1400, year_to=1499) == {early.pk}
    assert shown(year_from=1600) == {late.pk}
    assert shown(artist=giotto.pk) == {late.pk}
    assert shown(q="bondone") == {late.pk}
    assert shown() == {early.pk, late.pk, undated.pk}
    # The century links come from the data: 15th to 17th century here.
    html = cataloger_client.get(reverse(CHANGELIST)).content.decode()
    assert "15th century" in html and "17th century" in html and "18th century" not in html


def test_changelist_queries_do_not_grow_with_the_page(cataloger_client):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert cataloger_client.get(reverse(CHANGELIST)).status_code == 200
        return len(captured.captured_queries)

    for artwork in ArtworkFactory.create_batch(3):
        artwork.artists.add(ArtistFactory())
        DetailFactory(artwork=artwork)
    few = queries()
    for artwork in ArtworkFactory.create_batch(30):
        artwork.artists.add(ArtistFactory())
        DetailFactory(artwork=artwork)
    assert queries() == few


def test_a_mistyped_year_is_reported_and_ignored(cataloger_client):
    artwork = ArtworkFactory()
    response = cataloger_client.get(reverse(CHANGELIST), {"year_from": "15o0"}, follow=True)
    assert response.status_code == 200
    assert [a.pk for a in response.context["cl"].result_list] == [artwork.pk]
    assert any("15o0" in str(m) and "not a year" in str(m) for m in response.context["messages"])


# --- Artwork page: details over the image -------------------------------------------------------------


def test_change_page_draws_every_detail_as_a_box_over_the_image(cataloger_client, real_artwork):
    hidden = real_artwork.details.first()
    hidden.review_state = ReviewState.HIDDEN
    hidden.caption = '<script>alert("x")</script>'
    hidden.save()

    response = cataloger_client.get(change_url(real_artwork))
    html = response.content.decode()
    assert response.status_code == 200
    assert f'src="{real_artwork.image.url}"' in html
    details = list(real_artwork.details.all())
    assert len(details) == 12
    for d in details:
        assert f'data-detail-id="{d.pk}"' in html
        assert f'data-box="{d.x:.4f} {d.y:.4f} {d.w:.4f} {d.h:.4f}"' in html
        assert f"left:{d.x * 100:.3f}%;top:{d.y * 100:.3f}%" in html
    assert html.count('class="semart-box semart-box--') == 12
    assert html.count("semart-box--scene") >= 4  # 12 details over three levels, plus the legend
    assert "is-hidden" in html  # hidden details are drawn, dimmed and off by default
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    # Per-stage processing is shown read-only.
    assert "steps-TOTAL_FORMS" in html


def test_change_page_shows_processing_steps_read_only(cataloger_client):
    artwork = ArtworkFactory()
    ProcessingStep.objects.create(
        artwork=artwork,
        stage=Stage.ENTITIES,
        status=StageStatus.FAILED,
        attempts=3,
        last_error="CUDA out of memory",
        model_version="ssd@2",
    )
    response = cataloger_client.get(change_url(artwork))
    html = response.content.decode()
    assert "CUDA out of memory" in html and "ssd@2" in html
    assert 'name="steps-0-status"' not in html  # shown, not editable


def test_editing_a_detail_inline_marks_it_corrected_and_approving_keeps_it(cataloger_client, real_artwork):
    edited, approved, untouched = list(real_artwork.details.order_by("pk")[:3])
    page = cataloger_client.get(change_url(real_artwork))
    data = change_form_data(page)
    data[f"{detail_row_prefix(page, edited)}-label"] = "angel"
    data[f"{detail_row_prefix(page, edited)}-w"] = str(round(edited.w / 2, 4))
    data[f"{detail_row_prefix(page, approved)}-review_state"] = ReviewState.APPROVED

    response = cataloger_client.post(change_url(real_artwork), data)
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    edited.refresh_from_db()
    approved.refresh_from_db()
    untouched_before = untouched.updated_at
    untouched.refresh_from_db()
    assert (edited.label, edited.review_state) == ("angel", ReviewState.CORRECTED)
    assert edited.w == pytest.approx(round(edited.w, 4))
    assert approved.review_state == ReviewState.APPROVED
    assert untouched.review_state == ReviewState.UNREVIEWED and untouched.updated_at == untouched_before


def test_hiding_a_detail_inline_hides_it_even_when_edited(cataloger_client, real_artwork):
    detail = real_artwork.details.order_by("pk").first()
    page = cataloger_client.get(change_url(real_artwork))
    data = change_form_data(page)
    prefix = detail_row_prefix(page, detail)
    data[f"{prefix}-caption"] = "not a saint: a crack in the paint"
    data[f"{prefix}-review_state"] = ReviewState.HIDDEN
    assert cataloger_client.post(change_url(real_artwork), data).status_code == 302
    detail.refresh_from_db()
    assert detail.review_state == ReviewState.HIDDEN
    assert detail.caption == "not a saint: a crack in the paint"


def test_a_box_outside_the_image_is_refused_and_nothing_is_saved(cataloger_client, real_artwork):
    detail = real_artwork.details.order_by("pk").first()
    before = (detail.x, detail.w, detail.label, detail.review_state)
    page = cataloger_client.get(change_url(real_artwork))
    data = change_form_data(page)
    prefix = detail_row_prefix(page, detail)
    data["title"] = "A new title that must not be saved either"
    data[f"{prefix}-x"] = "0.9"
    data[f"{prefix}-w"] = "0.5"
    data[f"{prefix}-label"] = "halo"
    response = cataloger_client.post(change_url(real_artwork), data)
    assert response.status_code == 200  # the page again, with the error
    assert "errornote" in response.content.decode()
    detail.refresh_from_db()
    real_artwork.refresh_from_db()
    assert (detail.x, detail.w, detail.label, detail.review_state) == before
    assert real_artwork.title != "A new title that must not be saved either"


# --- Detail admin -------------------------------------------------------------------------------------


def test_detail_list_filters_and_review_actions(cataloger_client):
    artwork = ArtworkFactory()
    halo = DetailFactory(artwork=artwork, label="halo", model_key="ssd@1")
    crowd = DetailFactory(artwork=artwork, label="crowd", level=DetailLevel.GROUP, model_key="grouper@1")
    url = reverse("admin:collections_app_detail_changelist")

    response = cataloger_client.get(url, {"level__exact": "group"})
    assert [d.pk for d in response.context["cl"].result_list] == [crowd.pk]
    response = cataloger_client.get(url, {"model_key__exact": "ssd@1"})
    assert [d.pk for d in response.context["cl"].result_list] == [halo.pk]

    cataloger_client.post(url, {"action": "approve_details", "_selected_action": [halo.pk]})
    cataloger_client.post(url, {"action": "hide_details", "_selected_action": [crowd.pk]})
    halo.refresh_from_db()
    crowd.refresh_from_db()
    assert halo.review_state == ReviewState.APPROVED
    assert crowd.review_state == ReviewState.HIDDEN
    response = cataloger_client.get(url, {"review_state__exact": "hidden"})
    assert [d.pk for d in response.context["cl"].result_list] == [crowd.pk]


def test_editing_a_detail_on_its_own_page_marks_it_corrected(cataloger_client):
    detail = DetailFactory(label="lily", caption="a lily")
    url = reverse("admin:collections_app_detail_change", args=[detail.pk])
    page = cataloger_client.get(url)
    data = change_form_data(page)
    data["caption"] = "a white lily held by the angel"
    assert cataloger_client.post(url, data).status_code == 302
    detail.refresh_from_db()
    assert detail.caption == "a white lily held by the angel"
    assert detail.review_state == ReviewState.CORRECTED


def test_embeddings_are_shown_but_never_editable(admin_client):
    artwork = ArtworkFactory()
    embedding = ArtworkEmbedding.objects.create(
        artwork=artwork, model_key="minilm-effnet@1", kind="image", dim=3, vector=[0.1, 0.2, 0.3]
    )
    assert admin_client.get(reverse("admin:collections_app_artworkembedding_changelist")).status_code == 200
    response = admin_client.get(reverse("admin:collections_app_artworkembedding_change", args=[embedding.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="vector"' not in html and 'name="model_key"' not in html
    assert admin_client.get(reverse("admin:collections_app_artworkembedding_add")).status_code == 403
    response = admin_client.get(reverse("admin:collections_app_artworkembedding_delete", args=[embedding.pk]))
    assert response.status_code == 403


# --- Actions and the jobs view: real rows, real broker ------------------------------------------------


def test_reprocess_action_queues_every_stage_on_the_broker(
    cataloger_client, redis_client, django_capture_on_commit_callbacks
):
    first, second = ArtworkFactory(), ArtworkFactory()
    ProcessingStep.objects.create(artwork=first, stage=Stage.EMBED, status=StageStatus.DONE)
    with django_capture_on_commit_callbacks(execute=True):
        response = cataloger_client.post(
            reverse(CHANGELIST),
            {"action": "reprocess", "_selected_action": [first.pk, second.pk]},
            follow=True,
        )
    assert any("Queued 2 artwork(s) for reprocessing" in str(m) for m in response.context["messages"])
    steps = ProcessingStep.objects.filter(artwork__in=[first, second])
    assert steps.count() == 2 * len(Stage.values)
    assert set(steps.values_list("status", flat=True)) == {StageStatus.QUEUED}
    sent = queued_messages(redis_client)
    assert {m["task"] for m in sent} == {"workers.artwork_process"}
    assert sorted(m["kwargs"]["artwork_id"] for m in sent) == sorted([first.pk, second.pk])
    assert all(m["kwargs"]["force"] is True for m in sent)


def test_reembed_action_queues_only_the_embedding_stages(
    cataloger_client, redis_client, django_capture_on_commit_callbacks
):
    artwork = ArtworkFactory()
    with django_capture_on_commit_callbacks(execute=True):
        response = cataloger_client.post(
            reverse(CHANGELIST), {"action": "reembed", "_selected_action": [artwork.pk]}, follow=True
        )
    assert any("Queued 1 artwork(s) for re-embedding" in str(m) for m in response.context["messages"])
    assert set(artwork.steps.values_list("stage", flat=True)) == {Stage.EMBED, Stage.CAPTIONS}
    [message] = queued_messages(redis_client)
    assert message["kwargs"] == {"artwork_id": artwork.pk, "force": True, "stages": ["embed", "captions"]}


def test_a_new_image_queues_processing_when_processing_on_save(
    cataloger_client, redis_client, settings, django_capture_on_commit_callbacks
):
    settings.SEMART_PROCESS_ON_SAVE = True
    artwork = ArtworkFactory()
    page = cataloger_client.get(change_url(artwork))
    data = change_form_data(page)
    data["title"] = "Retitled only"
    with django_capture_on_commit_callbacks(execute=True):
        assert cataloger_client.post(change_url(artwork), data).status_code == 302
    assert not artwork.steps.exists() and queued_messages(redis_client) == []  # no new picture, no work

    data["iiif_url"] = "https://iiif.example.org/iiif/new-photo"
    with django_capture_on_commit_callbacks(execute=True):
        assert cataloger_client.post(change_url(artwork), data).status_code == 302
    assert set(artwork.steps.values_list("status", flat=True)) == {StageStatus.QUEUED}
    [message] = queued_messages(redis_client)
    assert message["kwargs"]["artwork_id"] == artwork.pk and message["kwargs"]["force"] is True


def test_a_detail_drawn_by_hand_is_credited_to_the_cataloger(cataloger_client):
    response = cataloger_client.get(reverse("admin:collections_app_detail_add"))
    assert response.context["adminform"].form.initial["model_key"] == "cataloger"


def _failed(artwork, stage: str, error: str = "boom") -> ProcessingStep:  # type: ignore[no-untyped-def]
    return ProcessingStep.objects.create(
        artwork=artwork, stage=stage, status=StageStatus.FAILED, attempts=2, last_error=error
    )


def test_jobs_view_counts_stages_and_lists_failures(cataloger_client):
    a, b, c = ArtworkFactory(title="Annunciation"), ArtworkFactory(), ArtworkFactory()
    for artwork in (a, b, c):
        ProcessingStep.objects.create(artwork=artwork, stage=Stage.FETCH, status=StageStatus.DONE)
    ProcessingStep.objects.create(artwork=b, stage=Stage.ENTITIES, status=StageStatus.QUEUED)
    _failed(a, Stage.ENTITIES, error="<b>detector</b> ran out of memory")

    response = cataloger_client.get(reverse("admin-jobs"))
    html = response.content.decode()
    assert response.status_code == 200
    rows = {row["value"]: dict(row["cells"]) for row in response.context["rows"]}
    assert rows["fetch"]["done"] == 3
    assert rows["entities"] == {**rows["entities"], "queued": 1, "failed": 1}
    assert dict(response.context["totals"])["failed"] == 1
    assert change_url(a) in html and "Annunciation" in html
    assert "&lt;b&gt;detector&lt;/b&gt; ran out of memory" in html
    assert 'http-equiv="refresh"' in html
    assert "Retry all failed" in html


def test_processing_steps_list_links_the_jobs_view_and_filters_failures(cataloger_client):
    failed = _failed(ArtworkFactory(), Stage.FETCH)
    ProcessingStep.objects.create(artwork=ArtworkFactory(), stage=Stage.FETCH, status=StageStatus.DONE)
    url = reverse("admin:collections_app_processingstep_changelist")
    response = cataloger_client.get(url, {"status__exact": "failed"})
    assert [s.pk for s in response.context["cl"].result_list] == [failed.pk]
    assert reverse("admin-jobs") in response.content.decode()
    change = reverse("admin:collections_app_processingstep_change", args=[failed.pk])
    assert 'name="status"' not in cataloger_client.get(change).content.decode()


def test_jobs_view_needs_the_view_permission(client, django_user_model):
    staff = django_user_model.objects.create_user(username="staff", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.get(reverse("admin-jobs")).status_code == 403


def test_retry_requeues_the_failed_stage_without_redoing_finished_ones(
    cataloger_client, redis_client, django_capture_on_commit_callbacks
):
    artwork, other = ArtworkFactory(), ArtworkFactory()
    done = ProcessingStep.objects.create(artwork=artwork, stage=Stage.FETCH, status=StageStatus.DONE)
    failed = _failed(artwork, Stage.ENTITIES)
    other_failed = _failed(other, Stage.FETCH)

    with django_capture_on_commit_callbacks(execute=True):
        response = cataloger_client.post(reverse("admin-jobs"), {"step": failed.pk}, follow=True)
    assert any("Queued 1 artwork(s)" in str(m) for m in response.context["messages"])
    failed.refresh_from_db()
    done.refresh_from_db()
    other_failed.refresh_from_db()
    assert failed.status == StageStatus.QUEUED
    assert done.status == StageStatus.DONE
    assert other_failed.status == StageStatus.FAILED
    [message] = queued_messages(redis_client)
    assert message["kwargs"]["artwork_id"] == artwork.pk
    assert message["kwargs"]["stages"] == ["entities"]


def test_retry_all_failed_requeues_each_artwork_once(
    cataloger_client, redis_client, django_capture_on_commit_callbacks
):
    a, b = ArtworkFactory(), ArtworkFactory()
    _failed(a, Stage.FETCH)
    _failed(a, Stage.EMBED)
    _failed(b, Stage.CAPTIONS)
    with django_capture_on_commit_callbacks(execute=True):
        cataloger_client.post(reverse("admin-jobs"), {"retry": "all"})
    assert not ProcessingStep.objects.filter(status=StageStatus.FAILED).exists()
    sent = {m["kwargs"]["artwork_id"]: m["kwargs"]["stages"] for m in queued_messages(redis_client)}
    assert sent == {a.pk: ["fetch", "embed"], b.pk: ["captions"]}


def test_retry_refuses_bad_input_and_posts_without_csrf(cataloger, redis_client):
    artwork = ArtworkFactory()
    failed = _failed(artwork, Stage.FETCH)
    client = Client(enforce_csrf_checks=True)
    client.force_login(cataloger)
    assert client.post(reverse("admin-jobs"), {"step": failed.pk}).status_code == 403

    client = Client()
    client.force_login(cataloger)
    response = client.post(reverse("admin-jobs"), {"step": "seven"}, follow=True)
    assert any("Nothing to retry" in str(m) for m in response.context["messages"])
    failed.refresh_from_db()
    assert failed.status == StageStatus.FAILED
    assert queued_messages(redis_client) == []
