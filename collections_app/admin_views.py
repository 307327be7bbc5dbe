"""The jobs view of the admin: processing counts by stage and status, failures, retry.

Routed at /admin/jobs/ through ``admin.site.admin_view`` (semart_site/urls.py), so only active staff reach it
and everyone else is sent to the admin login.
"""

from __future__ import annotations

from collections import defaultdict

from django.apps import apps
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from collections_app.models import ProcessingStep, Stage, StageStatus
from collections_app.selectors import processing_counts, processing_failures
from collections_app.services import artwork_queue_processing

REFRESH_SECONDS = 15


def failed_steps_retry(*, step_ids: list[int] | None) -> tuple[int, int]:
    """Re-queue the artworks of these failed steps (all failed steps when ``step_ids`` is None).

    Each artwork is queued for the stages it has not finished, without ``force``: the pipeline computes only
    what is missing, so a retry never redoes finished work and a double click is harmless.
    Returns (artworks queued, failed steps found).
    """
    failed = ProcessingStep.objects.filter(status=StageStatus.FAILED)
    if step_ids is not None:
        failed = failed.filter(pk__in=step_ids)
    artwork_ids = set(failed.values_list("artwork_id", flat=True))
    if not artwork_ids:
        return 0, 0
    unfinished: dict[int, list[str]] = defaultdict(list)
    for artwork_id, stage in (
        ProcessingStep.objects.filter(artwork_id__in=artwork_ids)
        .exclude(status=StageStatus.DONE)
        .values_list("artwork_id", "stage")
    ):
        unfinished[artwork_id].append(stage)
    # One call per distinct set of stages, in pipeline order, instead of one per artwork.
    order = {stage: i for i, stage in enumerate(Stage.values)}
    by_stages: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for artwork_id, stages in unfinished.items():
        by_stages[tuple(sorted(stages, key=order.__getitem__))].append(artwork_id)
    queued = sum(
        artwork_queue_processing(artwork_ids=ids, stages=list(stages)) for stages, ids in by_stages.items()
    )
    return queued, len(artwork_ids)


def _step_ids(request: HttpRequest) -> list[int] | None:
    if request.POST.get("retry") == "all":
        return None
    raw = request.POST.getlist("step")
    try:
        return [int(v) for v in raw]
    except ValueError:
        return []


@require_http_methods(["GET", "POST"])
def jobs_view(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("collections_app.view_processingstep"):
        raise PermissionDenied
    if request.method == "POST":
        # Retrying queues work on artworks: the same permission as the Reprocess action.
        if not request.user.has_perm("collections_app.change_artwork"):
            raise PermissionDenied
        step_ids = _step_ids(request)
        if step_ids == []:
            messages.error(request, "Nothing to retry: no failed step was named.")
        else:
            queued, found = failed_steps_retry(step_ids=step_ids)
            if found:
                messages.success(request, f"Queued {queued} artwork(s) again for their unfinished stages.")
            else:
                messages.warning(request, "Nothing to retry: those steps are no longer failed.")
        return HttpResponseRedirect(reverse("admin-jobs"))

    counts = processing_counts()
    statuses = list(StageStatus)
    rows = []
    for stage in Stage:
        by_status = counts.get(stage.value, {})
        rows.append(
            {
                "stage": stage.label,
                "value": stage.value,
                "cells": [(s.value, by_status.get(s.value, 0)) for s in statuses],
                "total": sum(by_status.values()),
            }
        )
    totals = [(s.value, sum(counts.get(st, {}).get(s.value, 0) for st in counts)) for s in statuses]
    context = {
        **admin.site.each_context(request),
        "title": "Processing jobs",
        "app_name": apps.get_app_config("collections_app").verbose_name,
        "statuses": statuses,
        "rows": rows,
        "totals": totals,
        "grand_total": sum(n for _, n in totals),
        "failures": processing_failures(),
        "can_retry": request.user.has_perm("collections_app.change_artwork"),
        "refresh_seconds": REFRESH_SECONDS,
    }
    return render(request, "admin/collections_app/jobs.html", context)
