// Charter console: SLA countdowns. Plain JavaScript, no build step; the pages work without it.
"use strict";
function fmt(ms) {
  const s = Math.round(Math.abs(ms) / 1000), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return (h ? h + "h " : "") + m + "m";
}
function tick() {
  document.querySelectorAll("time.countdown").forEach((el) => {
    const due = Date.parse(el.getAttribute("datetime"));
    if (isNaN(due)) return;
    const left = due - Date.now();
    el.textContent = left >= 0 ? "due in " + fmt(left) : "overdue by " + fmt(left);
    el.title = el.getAttribute("datetime");
  });
}
document.addEventListener("DOMContentLoaded", () => { tick(); setInterval(tick, 30000); });
