// Small helpers for the console's pages: select-all on the dead-letter list, and the
// message page's refresh until its message is final. No libraries.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const all = document.getElementById("select-all");
  if (all) {
    const boxes = () => document.querySelectorAll('#dead-form input[name="id"]');
    all.addEventListener("change", () => boxes().forEach((box) => { box.checked = all.checked; }));
  }
  const refresh = document.getElementById("auto-refresh");
  if (refresh) {
    setTimeout(() => { if (refresh.checked) window.location.reload(); }, 2000);
  }
});
