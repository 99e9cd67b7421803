// Cog's page behaviour: small, plain, no framework. Pages are rendered by the server and htmx
// swaps fragments; this file adds only what HTML cannot do alone: uploads with progress,
// dialogs, short status messages, inserting template variables, and a few keys.
// Nothing here builds markup from strings: text goes in through textContent, always.
(() => {
  "use strict";

  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));
  const typing = (el) =>
    el instanceof HTMLElement && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));

  // --- status messages ------------------------------------------------------------------

  function toast(message, isError = false) {
    const box = $("#toasts");
    if (!box || !message) return;
    const item = document.createElement("div");
    item.className = isError ? "toast toast-error" : "toast";
    item.setAttribute("role", isError ? "alert" : "status");
    item.textContent = message;
    box.append(item);
    setTimeout(() => item.remove(), isError ? 9000 : 3500);
  }

  // The server says what happened in an `HX-Trigger: {"cog:toast": ...}` header.
  document.addEventListener("cog:toast", (event) => {
    const detail = event.detail || {};
    toast(typeof detail.value === "string" ? detail.value : detail.message, Boolean(detail.error));
  });

  // Errors the server did not already describe in a header: show the API's `detail`.
  document.addEventListener("htmx:responseError", (event) => {
    const xhr = event.detail.xhr;
    if (xhr.getResponseHeader("HX-Trigger")) return;
    let message = `Something went wrong (${xhr.status}).`;
    try {
      const body = JSON.parse(xhr.responseText);
      if (typeof body.detail === "string") message = body.detail;
    } catch (_) {
      /* not JSON: keep the generic words */
    }
    toast(message, true);
  });
  document.addEventListener("htmx:sendError", () =>
    toast("Cog could not be reached. Is `cog serve` still running?", true),
  );

  // --- confirmations and dialogs ------------------------------------------------------

  // `hx-confirm` asks in Cog's own dialog instead of the browser's.
  function ask(question, danger) {
    const dialog = $("#confirm");
    const ok = $("[data-confirm-ok]", dialog);
    const cancel = $("[data-confirm-cancel]", dialog);
    $("#confirm-text", dialog).textContent = question;
    ok.className = danger ? "danger" : "";
    ok.textContent = danger ? "Delete" : "Continue";
    return new Promise((resolve) => {
      let answered = false;
      const finish = (value) => {
        if (answered) return;
        answered = true;
        if (dialog.open) dialog.close();
        resolve(value);
      };
      ok.onclick = () => finish(true);
      cancel.onclick = () => finish(false);
      dialog.onclose = () => finish(false); // Escape, or closed any other way
      dialog.showModal();
      (danger ? cancel : ok).focus();
    });
  }

  document.addEventListener("htmx:confirm", (event) => {
    const question = event.detail.question;
    if (!question) return;
    event.preventDefault();
    const danger = event.detail.elt.classList.contains("danger");
    ask(question, danger).then((yes) => {
      if (yes) event.detail.issueRequest(true);
    });
  });

  // Dialogs the server renders (move, delete) arrive in #modal: open them, drop them on close.
  document.addEventListener("htmx:afterSwap", (event) => {
    if (event.detail.target?.id !== "modal") return;
    const dialog = $("dialog", event.detail.target);
    if (!dialog) return;
    dialog.addEventListener("close", () => dialog.remove(), { once: true });
    dialog.showModal();
  });

  document.addEventListener("click", (event) => {
    const closer = event.target.closest("[data-close-dialog]");
    if (closer) closer.closest("dialog")?.close();
  });

  // --- the series tree -------------------------------------------------------------------

  document.addEventListener("click", (event) => {
    const twisty = event.target.closest("[data-twisty]");
    if (!twisty) return;
    const open = twisty.getAttribute("aria-expanded") !== "true";
    twisty.setAttribute("aria-expanded", String(open));
    const children = document.getElementById(twisty.getAttribute("aria-controls"));
    if (children) children.hidden = !open;
  });

  // --- keys --------------------------------------------------------------------------------

  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.metaKey || event.ctrlKey || event.altKey) return;
    if (event.key === "Escape") {
      const form = event.target.closest?.("[data-escape-cancel]");
      const cancel = form && $("[data-cancel]", form);
      if (cancel) {
        event.preventDefault();
        // The form may have been swapped in a moment ago: make sure htmx has wired its button.
        if (window.htmx) window.htmx.process(cancel);
        cancel.click();
      }
      return;
    }
    if (typing(event.target) || document.querySelector("dialog[open]")) return;
    if (event.key === "/") {
      const search = $("[data-shortcut='/']");
      if (search) {
        event.preventDefault();
        search.focus();
      }
    } else if (event.key === "ArrowLeft" || event.key === "ArrowRight") {
      const link = $(`a[data-key="${event.key}"]`);
      if (link) {
        event.preventDefault();
        link.click();
      }
    }
  });

  // --- the job editor -------------------------------------------------------------------------

  // Variables go in at the cursor of the step's prompt (at its end if it was never focused).
  let lastPrompt = null;
  document.addEventListener("focusin", (event) => {
    if (event.target.matches?.("textarea[data-prompt]")) lastPrompt = event.target;
  });
  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-insert]");
    if (!button) return;
    const area = $("textarea[data-prompt]", button.closest(".step-card"));
    if (!area) return;
    const text = button.dataset.insert;
    if (area === lastPrompt) {
      area.setRangeText(text, area.selectionStart, area.selectionEnd, "end");
    } else {
      const gap = area.value && !/\s$/.test(area.value) ? " " : "";
      area.value += gap + text;
      area.setSelectionRange(area.value.length, area.value.length);
    }
    area.focus();
    area.dispatchEvent(new Event("input", { bubbles: true }));
  });

  // Unsaved edits are marked, and leaving the page with them asks first.
  let leaving = false;
  function markDirty(event) {
    const form = event.target.closest?.("form[data-editor]");
    if (!form || form.dataset.status === "unsaved") return;
    form.dataset.status = "unsaved";
    const state = $("#save-state", form);
    if (state) state.textContent = "Unsaved changes";
  }
  document.addEventListener("input", markDirty);
  document.addEventListener("change", markDirty);
  document.addEventListener("htmx:beforeOnLoad", (event) => {
    const xhr = event.detail.xhr;
    if (xhr.getResponseHeader("HX-Redirect") || xhr.getResponseHeader("HX-Refresh")) leaving = true;
  });
  window.addEventListener("beforeunload", (event) => {
    if (leaving || !$("form[data-editor][data-status=unsaved], form[data-editor][data-status=invalid]")) return;
    event.preventDefault();
    event.returnValue = "";
  });

  // --- what every swap needs --------------------------------------------------------------------

  const sameDay = (a, b) => a.toDateString() === b.toDateString();
  const dayAndTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  const timeOnly = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });

  function settle(root) {
    // Times arrive in UTC; show them in the reader's zone.
    for (const el of $$("time[data-local]", root)) {
      const when = new Date(el.getAttribute("datetime"));
      if (!Number.isNaN(when.getTime())) {
        el.textContent = sameDay(when, new Date()) ? `today ${timeOnly.format(when)}` : dayAndTime.format(when);
        el.title = when.toString();
      }
      el.removeAttribute("data-local");
    }
    // The large image: hide its blurred stand-in once the file is there.
    for (const box of $$("[data-stage]", root)) {
      const full = $(".stage-full", box);
      if (full.complete && full.naturalWidth) box.classList.add("loaded");
      else full.addEventListener("load", () => box.classList.add("loaded"), { once: true });
    }
  }
  htmx.onLoad(settle);

  // An image whose file is gone leaves its box empty rather than a broken-image icon.
  document.addEventListener(
    "error",
    (event) => {
      if (event.target instanceof HTMLImageElement) event.target.classList.add("missing");
    },
    true,
  );

  // --- search ----------------------------------------------------------------------------------

  // A search's address carries only the fields in use, so it stays short to share.
  document.addEventListener("htmx:configRequest", (event) => {
    const form = event.detail.elt;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-drop-empty")) return;
    const params = event.detail.parameters;
    for (const name of Object.keys(params)) {
      if (params[name] === "") delete params[name];
    }
    for (const field of $$("[data-only-with]", form)) {
      if (!params[field.dataset.onlyWith]) delete params[field.name];
    }
  });

  // The search box is focused on arrival with the caret after its words, to go on typing.
  const searchBox = $("[data-focus-end]");
  if (searchBox) {
    searchBox.focus();
    searchBox.setSelectionRange(searchBox.value.length, searchBox.value.length);
  }

  // --- uploads -----------------------------------------------------------------------------------

  const zone = $("#dropzone");
  if (zone) uploads(zone);

  function uploads(zone) {
    const url = zone.dataset.uploadUrl;
    const maxBytes = Number(zone.dataset.maxBytes || 0);
    const thumbPx = Number(zone.dataset.thumbPx || 512);
    const input = $("#file-input");
    const box = $("#uploads-box");
    const list = $("#uploads");
    const summary = $("#uploads-summary");
    const gallery = $("#gallery");
    const counter = $("#image-count");
    const queue = [];
    const counts = { total: 0, added: 0, refused: 0 };
    let running = 0;
    const PARALLEL = 3;

    $("[data-pick-files]", zone).addEventListener("click", () => input.click());
    input.addEventListener("change", () => {
      enqueue(input.files);
      input.value = "";
    });
    $("[data-clear-uploads]").addEventListener("click", () => {
      for (const row of $$("li.done, li.failed", list)) row.remove();
      if (!list.children.length) box.hidden = true;
    });

    // Files can be dropped anywhere on the page.
    const hasFiles = (event) => Array.from(event.dataTransfer?.types || []).includes("Files");
    let depth = 0;
    document.addEventListener("dragenter", (event) => {
      if (!hasFiles(event)) return;
      depth += 1;
      document.body.classList.add("dragging");
    });
    document.addEventListener("dragleave", (event) => {
      if (!hasFiles(event)) return;
      depth -= 1;
      if (depth <= 0) {
        depth = 0;
        document.body.classList.remove("dragging");
      }
    });
    document.addEventListener("dragover", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
    });
    document.addEventListener("drop", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      depth = 0;
      document.body.classList.remove("dragging");
      enqueue(event.dataTransfer.files);
    });

    function enqueue(files) {
      for (const file of files) {
        const row = makeRow(file);
        counts.total += 1;
        if (maxBytes && file.size > maxBytes) {
          fail(row, `Too large: ${megabytes(file.size)}; the largest accepted is ${megabytes(maxBytes)}.`);
          continue;
        }
        queue.push({ file, row });
      }
      box.hidden = false;
      report();
      pump();
    }

    function pump() {
      while (running < PARALLEL && queue.length) {
        running += 1;
        send(queue.shift()).finally(() => {
          running -= 1;
          report();
          pump();
        });
      }
    }

    // One file per request, so each file gets its own answer (the API keeps a batch or none).
    function send({ file, row }) {
      return new Promise((resolve) => {
        const xhr = new XMLHttpRequest();
        const body = new FormData();
        body.append("files", file, file.name);
        xhr.open("POST", url);
        xhr.setRequestHeader("Accept", "application/json");
        row.status.textContent = "Uploading…";
        xhr.upload.addEventListener("progress", (event) => {
          if (!event.lengthComputable) return;
          row.progress.value = (event.loaded / event.total) * 100;
          if (event.loaded === event.total) row.status.textContent = "Checking the image…";
        });
        xhr.addEventListener("load", () => {
          let answer = null;
          try {
            answer = JSON.parse(xhr.responseText);
          } catch (_) {
            /* keep null */
          }
          if (xhr.status === 201 && answer?.items?.length) added(row, answer.items[0]);
          else fail(row, refusal(xhr.status, answer));
          resolve();
        });
        xhr.addEventListener("error", () => {
          fail(row, "Cog could not be reached; nothing was stored.");
          resolve();
        });
        xhr.send(body);
      });
    }

    function refusal(status, answer) {
      const file = Array.isArray(answer?.files) ? answer.files[0] : null;
      if (file?.error) return file.error;
      if (typeof answer?.detail === "string") return answer.detail;
      return `Refused (${status}); nothing was stored.`;
    }

    function makeRow(file) {
      const li = document.createElement("li");
      const name = document.createElement("span");
      name.className = "upload-name";
      name.textContent = file.name;
      name.title = file.name;
      const progress = document.createElement("progress");
      progress.max = 100;
      progress.value = 0;
      progress.setAttribute("aria-label", `Upload of ${file.name}`);
      const status = document.createElement("span");
      status.className = "upload-status";
      status.textContent = "Waiting…";
      li.append(name, progress, status);
      list.append(li);
      return { li, progress, status };
    }

    function added(row, image) {
      counts.added += 1;
      row.li.classList.add("done");
      row.progress.value = 100;
      row.status.textContent = `Added · ${image.width} × ${image.height}`;
      $("#gallery-empty")?.remove();
      gallery.prepend(tile(image));
      if (counter) counter.textContent = String(Number(counter.textContent || 0) + 1);
    }

    function fail(row, message) {
      counts.refused += 1;
      row.li.classList.add("failed");
      row.progress.value = 0;
      row.status.textContent = message;
      row.status.setAttribute("role", "alert");
    }

    function report() {
      const left = counts.total - counts.added - counts.refused;
      const parts = [];
      if (left) parts.push(`Uploading ${left} of ${counts.total}…`);
      if (counts.added) parts.push(`${counts.added} added`);
      if (counts.refused) parts.push(`${counts.refused} refused`);
      summary.textContent = parts.join(" · ");
    }

    // The same markup as the `tile` macro in templates/_macros.html.
    function tile(image) {
      const label = image.original_filename || image.prompt || "Image";
      const scale = Math.min(1, thumbPx / Math.max(image.width, image.height, 1));
      const link = document.createElement("a");
      link.className = "tile tile-new";
      link.href = `/cog/images/${encodeURIComponent(image.id)}`;
      link.title = label;
      const img = document.createElement("img");
      img.src = image.thumbnail_url;
      img.alt = label;
      img.width = Math.max(1, Math.round(image.width * scale));
      img.height = Math.max(1, Math.round(image.height * scale));
      img.decoding = "async";
      link.append(img);
      return link;
    }

    const megabytes = (bytes) => `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  }
})();
