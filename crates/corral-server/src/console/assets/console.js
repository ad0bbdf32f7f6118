// Corral's console: the little that plain HTML forms cannot do. No inline script anywhere
// (the Content-Security-Policy forbids it); this file is served by the gateway itself.
"use strict";

const csrf = () => document.body.dataset.csrf || "";

// Live tables: a <tbody data-poll=URL data-interval=ms> is refreshed from the server's
// rendered rows (escaped there) without reloading the page.
function poll(tbody) {
  const every = Number(tbody.dataset.interval) || 2000;
  const tick = async () => {
    try {
      const resp = await fetch(tbody.dataset.poll, { credentials: "same-origin", cache: "no-store" });
      if (resp.ok) tbody.innerHTML = await resp.text();
      tbody.dataset.updated = String(Date.now());
    } catch (_) { /* the next tick tries again */ }
    setTimeout(tick, every);
  };
  setTimeout(tick, every);
}

// A pull: the fleet pull's NDJSON progress, line by line, into a progress bar.
function pull(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const box = form.querySelector("#pull-progress");
    const bar = box.querySelector("progress");
    const status = box.querySelector("#pull-status");
    const list = box.querySelector("#pull-instances");
    box.hidden = false;
    bar.value = 0;
    list.textContent = "";
    status.textContent = "starting…";
    form.dataset.state = "running";
    const body = { model: form.elements.model.value.trim() };
    const target = form.elements.target.value;
    if (target !== "all") body.urls = [Number(target)];
    const per = new Map();
    const item = (idx) => {
      if (!per.has(idx)) {
        const li = document.createElement("li");
        list.appendChild(li);
        per.set(idx, { li, done: 0, total: 0 });
      }
      return per.get(idx);
    };
    const finish = (state, text) => { form.dataset.state = state; status.textContent = text; };
    try {
      const resp = await fetch(form.action, {
        method: "POST",
        credentials: "same-origin",
        headers: { "content-type": "application/json", "x-csrf-token": csrf() },
        body: JSON.stringify(body),
      });
      if (!resp.ok) {
        const err = await resp.json().catch(() => ({}));
        return finish("error", "error: " + (err.error || err.detail || resp.status));
      }
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (!line) continue;
          const msg = JSON.parse(line);
          if (msg.url_idx === undefined) {
            if (msg.error) return finish("error", "error: " + msg.error);
            if (msg.status === "success") { bar.value = 100; return finish("success", "success: pulled " + body.model); }
            continue;
          }
          const it = item(msg.url_idx);
          if (msg.total) { it.total = msg.total; it.done = msg.completed || 0; }
          it.li.textContent = "#" + msg.url_idx + ": " + (msg.error ? "error: " + msg.error : msg.status || "");
          let done = 0, total = 0;
          per.forEach((v) => { done += v.done; total += v.total; });
          if (total > 0) bar.value = Math.round((100 * done) / total);
          status.textContent = "pulling " + body.model + "… " + bar.value + "%";
        }
      }
      finish("error", "error: the pull ended without an answer");
    } catch (e) {
      finish("error", "error: " + e);
    }
  });
}

// Copy buttons: <button data-copy="#selector">.
function copy(button) {
  button.addEventListener("click", async () => {
    const text = document.querySelector(button.dataset.copy)?.textContent || "";
    try {
      await navigator.clipboard.writeText(text);
      const note = button.parentElement.querySelector(".copied");
      if (note) note.hidden = false;
    } catch (_) {
      const range = document.createRange();
      range.selectNodeContents(document.querySelector(button.dataset.copy));
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
    }
  });
}

// Destructive buttons ask first.
function confirmDanger(button) {
  button.addEventListener("click", (event) => {
    if (button.closest("form")?.dataset.confirmed) return;
    if (!window.confirm(button.textContent.trim() + "?")) event.preventDefault();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("tbody[data-poll]").forEach(poll);
  document.querySelectorAll("form#pull").forEach(pull);
  document.querySelectorAll("button[data-copy]").forEach(copy);
  document.querySelectorAll("button.danger").forEach(confirmDanger);
});
