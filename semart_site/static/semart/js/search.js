// The search page, enhanced. Without this script the page still works (a form, links, a "More results" link).
// With it: a new search replaces the results in place (the previous request is aborted, so the server stops
// reranking for it), the address follows every search so it can be shared, and results load on scroll from
// /search.json.
(() => {
  "use strict";

  const form = document.querySelector("[data-search-form]");
  if (!form || !("fetch" in window) || !("AbortController" in window)) return;

  let controller = null; // the request in flight: a page of results, or the next batch on scroll
  let observer = null;
  let loadingMore = false;

  const region = () => document.getElementById("results-region");

  function announce(text) {
    const status = region()?.querySelector("[data-status]");
    if (status) status.textContent = text;
  }

  // Only the parameters that carry meaning, so shared links stay short and readable.
  function paramsFromForm() {
    const params = new URLSearchParams();
    for (const [name, value] of new FormData(form)) {
      const text = String(value).trim();
      if (text && !(name === "level" && text === "artworks")) params.append(name, text);
    }
    return params;
  }

  function startRequest() {
    if (controller) controller.abort();
    controller = new AbortController();
    return controller.signal;
  }

  async function showPage(url, { push }) {
    const signal = startRequest();
    const current = region();
    current?.setAttribute("aria-busy", "true");
    announce("Searching…");
    try {
      const response = await fetch(url, { signal, headers: { Accept: "text/html" }, credentials: "same-origin" });
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = doc.getElementById("results-region");
      if (!fresh) throw new Error(`unexpected answer (${response.status})`);
      syncFieldErrors(doc);
      current.replaceWith(fresh);
      document.title = doc.title;
      if (push) history.pushState({ semart: true }, "", url);
      setUpScroll();
      const count = fresh.querySelectorAll(".grid .card").length;
      announce(fresh.dataset.state === "results" ? `${count} results shown` : fresh.querySelector("h2")?.textContent.trim() || "");
    } catch (error) {
      if (error.name === "AbortError") return; // superseded by a newer search: that one reports
      current?.removeAttribute("aria-busy");
      showFailure(current, "The search could not be reached. Check your connection and try again.");
    }
  }

  // Field messages live in the form, which stays as the visitor left it: bring over only the server's verdict.
  function syncFieldErrors(doc) {
    for (const errors of form.querySelectorAll("[data-errors-for]")) errors.remove();
    for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
    for (const errors of doc.querySelectorAll("[data-search-form] [data-errors-for]")) {
      const name = errors.dataset.errorsFor;
      form.querySelector(`[data-field="${CSS.escape(name)}"]`)?.append(document.importNode(errors, true));
      for (const input of form.querySelectorAll(`[name="${CSS.escape(name)}"]`)) {
        input.setAttribute("aria-invalid", "true");
      }
    }
  }

  function showFailure(where, text) {
    if (!where) return;
    let box = where.querySelector("[data-failure]");
    if (!box) {
      box = document.createElement("div");
      box.className = "message message--error";
      box.setAttribute("role", "alert");
      box.dataset.failure = "";
      where.prepend(box);
    }
    box.textContent = text + " ";
    const retry = document.createElement("button");
    retry.type = "button";
    retry.className = "button";
    retry.textContent = "Try again";
    retry.addEventListener("click", () => {
      box.remove();
      showPage(location.href, { push: false });
    });
    box.append(retry);
  }

  // --- More results on scroll ------------------------------------------------------------------------

  function fillCard(hit, queryText, artworkUrl) {
    const template = document.getElementById("card-template");
    const card = template.content.firstElementChild.cloneNode(true);
    const slot = (name) => card.querySelector(`[data-slot="${name}"]`);
    const id = hit.artwork_id ?? hit.artwork;
    const detail = hit.detail ?? hit.region ?? null;
    const link = new URL(artworkUrl.replace(/\/0\/$/, `/${id}/`), location.origin);
    if (detail) {
      // A placement (where the detector shows the thing named) has no detail of its own: the box alone.
      const detailId = detail.id ?? detail.detail;
      if (detailId != null) link.searchParams.set("detail", detailId);
      link.searchParams.set("box", detail.box.map((v) => Number(v).toFixed(4)).join(","));
    }
    if (queryText) link.searchParams.set("q", queryText);
    card.dataset.artworkId = id;
    slot("link").href = link.pathname + link.search;
    const title = hit.title || "Untitled";
    slot("title").textContent = title;
    slot("artist").textContent = hit.artist_names || "";
    slot("date").textContent = hit.display_date || "";
    slot("score").textContent = typeof hit.score === "number" ? hit.score.toFixed(2) : "";
    const image = slot("image");
    if (hit.thumbnail_url) {
      image.src = hit.thumbnail_url;
      image.alt = title;
    } else {
      const none = document.createElement("span");
      none.className = "card__no-image";
      none.textContent = "No picture yet";
      image.replaceWith(none);
    }
    const outline = slot("region");
    if (detail) {
      const [x, y, w, h] = detail.box.map(Number);
      const clamp = (v) => Math.min(Math.max(v, 0), 1);
      Object.assign(outline.style, {
        left: `${clamp(x) * 100}%`, top: `${clamp(y) * 100}%`,
        width: `${Math.min(clamp(w), 1 - clamp(x)) * 100}%`, height: `${Math.min(clamp(h), 1 - clamp(y)) * 100}%`,
      });
      const words = { entity: "figure or object", group: "group", scene: "scene" }[detail.level] || "detail";
      const label = detail.label || detail.caption;
      const description = label ? `Matching ${words}: ${label}` : `Matching ${words}`;
      outline.setAttribute("aria-label", description);
      outline.title = description;
      outline.hidden = false;
    } else {
      outline.remove();
    }
    return card;
  }

  async function loadMore() {
    const results = region();
    const more = results?.querySelector("[data-more]");
    const grid = results?.querySelector(".grid");
    if (loadingMore || !more || !grid) return;
    loadingMore = true;
    const params = new URLSearchParams(results.dataset.params || "");
    params.set("offset", grid.dataset.nextOffset || String(grid.children.length));
    const signal = startRequest();
    more.textContent = "Loading more…";
    more.setAttribute("aria-disabled", "true");
    try {
      const response = await fetch(`${results.dataset.jsonUrl}?${params}`, {
        signal, headers: { Accept: "application/json" }, credentials: "same-origin",
      });
      if (!response.ok) throw new Error(`status ${response.status}`);
      const data = await response.json();
      const hits = data.hits ?? data.results ?? [];
      const queryText = new URLSearchParams(results.dataset.params || "").get("q") || "";
      for (const hit of hits) grid.append(fillCard(hit, queryText, results.dataset.artworkUrl));
      const next = data.next_offset ?? Number(params.get("offset")) + hits.length;
      grid.dataset.nextOffset = String(next);
      announce(`${hits.length} more results`);
      if (!data.has_more || hits.length === 0) {
        observer?.disconnect();
        const end = document.createElement("p");
        end.className = "results__end";
        end.textContent = "That is everything that matched well enough.";
        more.closest(".results__more").replaceWith(end);
      } else {
        more.textContent = "More results";
        more.removeAttribute("aria-disabled");
        more.href = `?${new URLSearchParams({ ...Object.fromEntries(new URLSearchParams(results.dataset.params || "")), offset: String(next) })}`;
      }
    } catch (error) {
      if (error.name === "AbortError") return;
      more.textContent = "More results";
      more.removeAttribute("aria-disabled");
      showFailure(more.closest(".results__more"), "More results could not be loaded.");
    } finally {
      loadingMore = false;
    }
  }

  function setUpScroll() {
    observer?.disconnect();
    const more = region()?.querySelector("[data-more]");
    if (!more) return;
    more.addEventListener("click", (event) => {
      event.preventDefault();
      loadMore();
    });
    if ("IntersectionObserver" in window) {
      observer = new IntersectionObserver((entries) => {
        if (entries.some((entry) => entry.isIntersecting)) loadMore();
      }, { rootMargin: "600px 0px" });
      observer.observe(more);
    }
  }

  // --- Wiring ------------------------------------------------------------------------------------------

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const params = paramsFromForm();
    const action = new URL(form.action, location.origin);
    showPage(params.toString() ? `${action.pathname}?${params}` : action.pathname, { push: true });
  });

  // Switching level re-runs the current search at once; with no query there is nothing to re-run.
  for (const radio of form.querySelectorAll('input[name="level"]')) {
    radio.addEventListener("change", () => {
      if (form.elements.q.value.trim() || form.elements.like_artwork?.value || form.elements.image?.value) form.requestSubmit();
    });
  }

  window.addEventListener("popstate", () => {
    const params = new URLSearchParams(location.search);
    form.elements.q.value = params.get("q") || "";
    const level = params.get("level") || "artworks";
    for (const radio of form.querySelectorAll('input[name="level"]')) radio.checked = radio.value === level;
    for (const name of ["artist", "year_from", "year_to", "classification", "medium", "collection"]) {
      if (form.elements[name]) form.elements[name].value = params.get(name) || "";
    }
    showPage(location.pathname + location.search, { push: false });
  });

  setUpScroll();
})();
