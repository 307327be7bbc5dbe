// The artwork change page: level and hidden toggles for the detail boxes, and each box linked to its row in
// the details inline (hover highlights both, a click scrolls to the row to review it).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const overlay = document.getElementById("semart-overlay");
  if (!overlay) return;

  document.querySelectorAll("[data-level-toggle]").forEach((box) => {
    box.addEventListener("change", () => {
      overlay.toggleAttribute("data-hide-" + box.dataset.levelToggle, !box.checked);
    });
  });
  const hiddenToggle = document.querySelector("[data-hidden-toggle]");
  if (hiddenToggle) {
    hiddenToggle.addEventListener("change", () => overlay.classList.toggle("show-hidden", hiddenToggle.checked));
  }

  const rows = new Map();
  document.querySelectorAll('.semart-details input[type=hidden][name$="-id"]').forEach((input) => {
    const row = input.closest("tr");
    if (row && input.value) rows.set(input.value, row);
  });

  overlay.querySelectorAll(".semart-box").forEach((box) => {
    const row = rows.get(box.dataset.detailId);
    const activate = (on) => {
      box.classList.toggle("is-active", on);
      if (row) row.classList.toggle("is-active", on);
    };
    box.addEventListener("mouseenter", () => activate(true));
    box.addEventListener("mouseleave", () => activate(false));
    box.addEventListener("click", (event) => {
      event.preventDefault();
      if (!row) return;
      row.scrollIntoView({ behavior: "smooth", block: "center" });
      const field = row.querySelector("select, input[type=text], textarea");
      if (field) field.focus({ preventScroll: true });
    });
    if (row) {
      row.addEventListener("mouseenter", () => activate(true));
      row.addEventListener("mouseleave", () => activate(false));
    }
  });
});
