// msgbatch view: the one script, served from the binary. On the runs page it refreshes each
// run's counters from /api/runs 2 seconds after the last refresh ended (so that a slow answer
// never has requests pile up behind it); values are set as text, never as markup. On a run's
// page whose report is being computed, or a comparison's page being computed, it asks the
// page's API (data-poll) the same way and reloads the page once its data-field says ready.
"use strict";
(function () {
  const table = document.querySelector('table[data-live="runs"]');
  if (!table) {
    return;
  }
  const note = document.getElementById("live");
  function set(row, field, value) {
    const cell = row.querySelector('[data-field="' + field + '"]');
    if (cell && cell.textContent !== value) {
      cell.textContent = value;
    }
  }
  function workers(run) {
    return run.workers
      .map(function (w) {
        return w.host + " pid " + w.pid + ": " + w.done + " (" +
          Math.round(w.share * 100) + "%)" + (w.alive ? "" : " gone");
      })
      .join("; ");
  }
  async function refresh() {
    let response;
    try {
      response = await fetch("/api/runs", {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
    } catch (e) {
      if (note) note.textContent = "Not refreshed: the server did not answer.";
      return;
    }
    if (!response.ok) {
      if (note) note.textContent = "Not refreshed: the server answered " + response.status + ".";
      return;
    }
    const data = await response.json();
    let unknown = 0;
    for (const run of data.runs) {
      const row = table.querySelector('tr[data-run="' + Number(run.id) + '"]');
      if (!row) {
        unknown += 1;
        continue;
      }
      set(row, "status", run.status);
      set(row, "done", run.done + " of " + run.jobs.total);
      set(row, "succeeded", String(run.jobs.succeeded));
      set(row, "failed", String(run.jobs.failed));
      set(row, "rejected", String(run.jobs.rejected));
      set(row, "spend", run.budget ? run.spend + " of " + run.budget : run.spend);
      set(row, "finished", run.finished_at || "-");
      set(row, "workers", workers(run));
    }
    if (note) {
      note.textContent = "Refreshed " + new Date().toLocaleTimeString() +
        (unknown > 0 ? "; " + unknown + " new run(s): reload to list them." : ".");
    }
    table.dataset.refreshed = String(Number(table.dataset.refreshed || 0) + 1);
  }
  function again() {
    setTimeout(function () {
      refresh().finally(again);
    }, 2000);
  }
  again();
})();
(function () {
  const computing = document.querySelector('[data-report="computing"]');
  if (!computing) {
    return;
  }
  // The page's own API, always a path of this server.
  const api = computing.dataset.poll;
  const field = computing.dataset.field;
  if (!api || new URL(api, window.location.href).origin !== window.location.origin) {
    return;
  }
  async function ready() {
    try {
      const response = await fetch(api, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      // A failure is shown by the page itself, reloaded.
      return !response.ok || (await response.json())[field] === "ready";
    } catch (e) {
      return false;
    }
  }
  function again() {
    setTimeout(function () {
      ready().then(function (done) {
        if (done) {
          window.location.reload();
        } else {
          again();
        }
      });
    }, 2000);
  }
  again();
})();
