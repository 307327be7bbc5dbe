// The artwork page, enhanced. Boxes already show their captions on hover and keyboard focus (CSS), and the
// level switches work without a script (CSS :has). This adds: click to pin a detail and read it below the
// picture, the list of details selecting their box, arrow keys to walk through the visible boxes, Escape to
// let go, and the matched region scrolled into view.
(() => {
  "use strict";

  const viewer = document.querySelector("[data-viewer]");
  if (!viewer) return;
  const caption = viewer.querySelector("[data-caption]");
  const boxes = () => [...viewer.querySelectorAll(".box[data-detail-id]")].filter((b) => b.offsetParent !== null);
  const initialCaption = caption ? caption.innerHTML : "";

  function describe(box) {
    const text = box.querySelector(".box__caption");
    const level = text?.querySelector(".box__level")?.textContent || "";
    const words = text?.querySelector(".box__text")?.textContent || "";
    const label = [...(text?.childNodes || [])]
      .filter((n) => n.nodeType === Node.TEXT_NODE)
      .map((n) => n.textContent.trim())
      .join(" ")
      .trim();
    const out = document.createElement("span");
    out.className = "viewer__selected";
    const strong = document.createElement("strong");
    strong.textContent = `${level.charAt(0).toUpperCase()}${level.slice(1)}:`;
    out.append(strong, ` ${label}${words ? `: ${words}` : ""}`);
    return out;
  }

  function select(id) {
    for (const el of document.querySelectorAll(".is-selected")) el.classList.remove("is-selected");
    if (!id) {
      if (caption) caption.innerHTML = initialCaption;
      return;
    }
    const box = viewer.querySelector(`.box[data-detail-id="${CSS.escape(id)}"]`);
    const item = document.querySelector(`[data-detail-item="${CSS.escape(id)}"]`)?.closest("li");
    if (!box) return;
    box.classList.add("is-selected");
    item?.classList.add("is-selected");
    if (caption) caption.replaceChildren(describe(box));
  }

  viewer.addEventListener("click", (event) => {
    const box = event.target.closest(".box[data-detail-id]");
    if (!box) return;
    select(box.classList.contains("is-selected") ? null : box.dataset.detailId);
  });

  viewer.addEventListener("keydown", (event) => {
    const current = event.target.closest(".box[data-detail-id]");
    if (!current) return;
    if (event.key === "Escape") {
      select(null);
      current.blur();
      return;
    }
    const step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 }[event.key];
    if (!step) return;
    event.preventDefault();
    const list = boxes();
    const next = list[(list.indexOf(current) + step + list.length) % list.length];
    next?.focus();
  });

  // Showing a level again must not leave a hidden box selected.
  for (const toggle of viewer.querySelectorAll("[data-level-toggle]")) {
    toggle.addEventListener("change", () => {
      const selected = viewer.querySelector(".box.is-selected");
      if (selected && selected.offsetParent === null) select(null);
    });
  }

  // The list under the picture: choosing an entry shows its level and selects its box.
  for (const item of document.querySelectorAll("[data-detail-item]")) {
    item.addEventListener("click", () => {
      const id = item.dataset.detailItem;
      const toggle = viewer.querySelector(`#show-${CSS.escape(item.dataset.level)}`);
      if (toggle && !toggle.checked) toggle.checked = true;
      select(id);
      viewer.querySelector(`.box[data-detail-id="${CSS.escape(id)}"]`)?.scrollIntoView({ block: "center", behavior: "smooth" });
    });
  }

  const match = viewer.querySelector(".box--match");
  if (match && match.getBoundingClientRect().top > window.innerHeight) {
    match.scrollIntoView({ block: "center" });
  }
})();
