// ldbridge Delivery Overview: the few things a server-rendered page cannot
// do alone. State-changing requests go through fetch() with the
// X-Ldbridge-Request header (a cross-site form cannot set it), and every
// UTC time gets the reader's local time beside it.
"use strict";

const HEADER = { "X-Ldbridge-Request": "1", "Content-Type": "application/x-www-form-urlencoded" };

function post(url, form) {
  return fetch(url, { method: "POST", headers: HEADER, body: new URLSearchParams(form), credentials: "same-origin" });
}

function localTimes() {
  for (const time of document.querySelectorAll("time[datetime]")) {
    const at = new Date(time.getAttribute("datetime"));
    if (Number.isNaN(at.getTime()) || time.dataset.local) continue;
    time.dataset.local = "1";
    const local = document.createElement("span");
    local.className = "local";
    local.textContent = " (" + at.toLocaleString() + " local)";
    time.after(local);
  }
}

function login() {
  const form = document.getElementById("login");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = document.getElementById("login-error");
    error.hidden = true;
    const answer = await post("/ui/login", new FormData(form));
    if (answer.ok) {
      window.location.assign(form.dataset.next || "/ui/");
    } else {
      error.textContent = answer.status === 401 ? "That is not the admin token." : "Log in failed (" + answer.status + ").";
      error.hidden = false;
    }
  });
}

async function resend(url, form, result) {
  const dry = new URLSearchParams(form);
  dry.set("dry_run", "true");
  const preview = await post(url, dry);
  const counted = await preview.json();
  if (!preview.ok) {
    result.textContent = counted.error || ("Resend failed (" + preview.status + ").");
    return;
  }
  const n = counted.requeued.length;
  if (n === 0) {
    result.textContent = "No batch matches" + (counted.refused.length ? ": " + counted.refused.map((r) => r.reason).join("; ") : ".");
    return;
  }
  if (!window.confirm("Resend " + n + " batch(es)? They keep their payload ids.")) {
    result.textContent = "Nothing resent.";
    return;
  }
  const done = await post(url, form);
  const report = await done.json();
  result.textContent = done.ok ? "Requeued " + report.requeued.length + " batch(es)." : (report.error || "Resend failed.");
  if (done.ok && form.get("reload") === "1") window.location.reload();
}

function resendButtons() {
  for (const button of document.querySelectorAll("button.resend")) {
    button.addEventListener("click", () => {
      const form = new FormData();
      form.set("force", button.dataset.force || "false");
      form.set("reload", "1");
      resend(button.dataset.url, form, document.getElementById("resend-result"));
    });
  }
  const filter = document.getElementById("resend-filter");
  if (filter) {
    filter.addEventListener("submit", (event) => {
      event.preventDefault();
      resend("/ui/resend", new FormData(filter), document.getElementById("resend-result"));
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes();
  login();
  resendButtons();
});
