"""IIIF Presentation manifests, API 2.x and 3.0: one artwork per canvas, or one per manifest (``single``).

The image service's id becomes ``iiif_url`` (the pipeline asks the server for the size it needs); an image
with no service keeps its direct URL in ``image_url``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.utils.html import strip_tags

from collections_app.importers.base import ImportItem
from collections_app.importers.catalogue import CatalogueError
from collections_app.services import ArtworkData

# metadata label (lower case) -> our field. Anything else is kept in extra under its label.
METADATA_FIELDS = {
    "artist": "artists",
    "artists": "artists",
    "creator": "artists",
    "author": "artists",
    "maker": "artists",
    "painter": "artists",
    "date": "display_date",
    "dated": "display_date",
    "created": "display_date",
    "date created": "display_date",
    "medium": "medium",
    "technique": "medium",
    "materials": "medium",
    "material": "medium",
    "medium and support": "medium",
    "dimensions": "dimensions",
    "size": "dimensions",
    "classification": "classification",
    "object type": "classification",
    "type": "classification",
    "accession number": "accession_number",
    "object number": "accession_number",
    "inventory number": "accession_number",
    "identifier": "accession_number",
    "credit line": "credit_line",
    "collection": "collection",
    "repository": "collection",
    "description": "description",
    "title": "title",
    "iconclass": "iconclass",
}
MAX_SOURCE_ID = 200  # Artwork.source_id's length


@dataclass
class IiifPlan:
    items: list[ImportItem]
    notes: list[str] = field(default_factory=list)


def text_of(value: Any, language: str = "en") -> str:
    """Plain text from any IIIF text value: a string, a v2 @value/@language list, a v3 language map."""
    if value is None:
        return ""
    if isinstance(value, str):
        return strip_tags(value).strip()
    if isinstance(value, dict):
        if "@value" in value:
            return text_of(value["@value"])
        # v3 language map: prefer the wanted language, then "none", then any
        for key in (language, "none", *value):
            if key in value:
                parts = value[key] if isinstance(value[key], list) else [value[key]]
                return "; ".join(t for t in (text_of(p) for p in parts) if t)
        return ""
    if isinstance(value, list):
        preferred = [v for v in value if isinstance(v, dict) and v.get("@language") == language]
        return "; ".join(t for t in (text_of(v) for v in (preferred or value)) if t)
    return str(value)


def _id(obj: Any) -> str:
    if isinstance(obj, str):
        return obj
    if isinstance(obj, dict):
        return str(obj.get("id") or obj.get("@id") or "")
    return ""


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


def _as_list(value: Any) -> list[Any]:
    """A list from what a manifest holds where the specs want one: manifests in the wild (and hostile ones)
    put a lone object, a string or a number there."""
    if isinstance(value, list):
        return value
    return [value] if isinstance(value, dict) else []


def _service_id(resource: dict[str, Any]) -> str:
    for service in _as_list(resource.get("service")):
        sid = _id(service)
        kind = str(service.get("type") or service.get("@type") or "") if isinstance(service, dict) else ""
        profile = str(service.get("profile") or "") if isinstance(service, dict) else ""
        if sid and ("ImageService" in kind or "iiif.io/api/image" in profile or not kind):
            return sid.rstrip("/").removesuffix("/info.json")
    return ""


def _version(manifest: dict[str, Any]) -> int:
    context = manifest.get("@context", "")
    contexts = context if isinstance(context, list) else [context]
    if any("presentation/3" in str(c) for c in contexts) or manifest.get("type") == "Manifest":
        return 3
    if any("presentation/2" in str(c) for c in contexts) or manifest.get("@type") == "sc:Manifest":
        return 2
    raise CatalogueError(
        "not a IIIF Presentation manifest (no presentation/2 or /3 context, no Manifest type)"
    )


def _canvases(manifest: dict[str, Any], version: int) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """(canvas, its first image resource or None) in order."""
    out = []
    if version == 3:
        for canvas in _as_list(manifest.get("items")):
            if not isinstance(canvas, dict) or canvas.get("type") != "Canvas":
                continue
            body = None
            for page in _as_list(canvas.get("items")):
                for annotation in _as_list(page.get("items")) if isinstance(page, dict) else []:
                    candidate = _first(annotation.get("body")) if isinstance(annotation, dict) else None
                    if isinstance(candidate, dict) and candidate.get("type", "Image") == "Image":
                        body = candidate
                        break
                if body:
                    break
            out.append((canvas, body))
    else:
        sequence = _first(manifest.get("sequences"))
        for canvas in _as_list(sequence.get("canvases")) if isinstance(sequence, dict) else []:
            if not isinstance(canvas, dict):
                continue
            image = _first(_as_list(canvas.get("images")))
            resource = image.get("resource") if isinstance(image, dict) else None
            out.append((canvas, resource if isinstance(resource, dict) else None))
    return out


def _manifest_fields(manifest: dict[str, Any], version: int) -> tuple[dict[str, Any], dict[str, str]]:
    """Fields shared by every canvas of the manifest, and its unmapped metadata (for extra)."""
    fields: dict[str, Any] = {"title": text_of(manifest.get("label"))}
    extra: dict[str, str] = {}
    for entry in _as_list(manifest.get("metadata")):
        if not isinstance(entry, dict):
            continue
        label, value = text_of(entry.get("label")), text_of(entry.get("value"))
        if not label or not value:
            continue
        target = METADATA_FIELDS.get(label.lower())
        if target == "artists":
            fields["artists"] = [a.strip() for a in value.split(";") if a.strip()]
        elif target == "iconclass":
            fields["iconclass"] = [n.strip() for n in value.split(";") if n.strip()]
        elif target == "title" and fields["title"]:
            extra[label] = value
        elif target:
            fields.setdefault(target, value)
        else:
            extra[label] = value
    if version == 3:
        fields.setdefault("description", text_of(manifest.get("summary")))
        fields["licence"] = (
            _id(manifest.get("rights"))
            if isinstance(manifest.get("rights"), dict)
            else str(manifest.get("rights") or "")
        )
        statement = manifest.get("requiredStatement")
        credit = statement.get("value") if isinstance(statement, dict) else statement
        fields["credit_line"] = fields.get("credit_line") or text_of(credit)
        fields["source_url"] = _id(_first(manifest.get("homepage") or []))
    else:
        fields.setdefault("description", text_of(manifest.get("description")))
        fields["licence"] = _id(_first(manifest.get("license") or "")) if manifest.get("license") else ""
        fields["credit_line"] = fields.get("credit_line") or text_of(manifest.get("attribution"))
        fields["source_url"] = _id(_first(manifest.get("related") or ""))
    return fields, extra


def _stable_id(uri: str) -> str:
    return uri if len(uri) <= MAX_SOURCE_ID else "sha256:" + hashlib.sha256(uri.encode()).hexdigest()


def load_manifest(location: str) -> tuple[dict[str, Any], str]:
    """The manifest's JSON from a file path or an http(s) URL (fetched safely), and a name for messages."""
    if location.startswith(("http://", "https://")):
        from collections_app.importers.remote import fetch_document

        raw = fetch_document(location, accept="application/ld+json, application/json")
        name = location
    else:
        from collections_app.importers.remote import DOCUMENT_MAX_BYTES

        path = Path(location)
        try:
            if path.stat().st_size > DOCUMENT_MAX_BYTES:
                raise CatalogueError(
                    f"{path.name} is {path.stat().st_size:,} bytes, over the manifest limit of "
                    f"{DOCUMENT_MAX_BYTES:,}"
                )
            raw = path.read_bytes()
        except OSError as exc:
            raise CatalogueError(f"cannot read {location}: {exc}") from exc
        name = path.name
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CatalogueError(f"{name} is not JSON: {exc}") from exc
    except RecursionError as exc:  # "[[[[...": nesting deeper than any manifest needs
        raise CatalogueError(f"{name} is nested too deeply to be a IIIF manifest") from exc
    if not isinstance(manifest, dict):
        raise CatalogueError(f"{name} is not a IIIF manifest (top level is not an object)")
    return manifest, name


def plan_iiif_import(
    manifest: dict[str, Any], *, name: str, source: str = "iiif", single: bool = False
) -> IiifPlan:
    version = _version(manifest)
    manifest_id = _id(manifest)
    fields, extra = _manifest_fields(manifest, version)
    canvases = _canvases(manifest, version)
    notes: list[str] = []
    if not canvases:
        raise CatalogueError(f"{name} has no canvases")

    def record(
        source_id: str, title: str, resource: dict[str, Any] | None, extra_here: dict[str, Any]
    ) -> ArtworkData:
        data = ArtworkData(source=source, source_id=_stable_id(source_id))
        for key, value in fields.items():
            setattr(data, key, list(value) if isinstance(value, list) else value)
        data.title = title
        if resource is not None:
            data.iiif_url = _service_id(resource)
            if not data.iiif_url:
                data.image_url = _id(resource)
        data.extra = {**extra, **extra_here, "iiif_manifest": manifest_id, "iiif_version": version}
        return data

    items: list[ImportItem] = []
    if single:
        first = next((r for _, r in canvases if r is not None), None)
        where = f"{name} (manifest)"
        if not manifest_id:
            return IiifPlan(items=[ImportItem(where=where, error="the manifest has no id")], notes=notes)
        items.append(
            ImportItem(
                where=where, data=record(manifest_id, fields["title"], first, {"canvases": len(canvases)})
            )
            if first is not None
            else ImportItem(where=where, error="no canvas has an image")
        )
        return IiifPlan(items=items, notes=notes)

    for number, (canvas, resource) in enumerate(canvases, start=1):
        where = f"{name} canvas {number}"
        canvas_id = _id(canvas)
        if not canvas_id:
            items.append(ImportItem(where=where, error="canvas has no id"))
            continue
        if resource is None:
            items.append(ImportItem(where=where, error="canvas has no image"))
            continue
        label = text_of(canvas.get("label"))
        if len(canvases) == 1 or not label:
            title = fields["title"] or label
        else:
            title = f"{fields['title']} ({label})" if fields["title"] else label
        canvas_extra: dict[str, Any] = {"iiif_canvas": canvas_id}
        for key in ("width", "height"):
            if canvas.get(key):
                canvas_extra[f"canvas_{key}"] = canvas[key]
        items.append(ImportItem(where=where, data=record(canvas_id, title, resource, canvas_extra)))
    return IiifPlan(items=items, notes=notes)
