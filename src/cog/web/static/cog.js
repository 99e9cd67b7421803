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

  // A message for the next page, when what was done makes the page load again.
  function toastAfterReload(message) {
    try {
      sessionStorage.setItem("cog:toast", message);
    } catch (_) {
      /* storage refused: the page still shows what changed */
    }
    window.location.reload();
  }
  try {
    const waiting = sessionStorage.getItem("cog:toast");
    if (waiting) {
      sessionStorage.removeItem("cog:toast");
      toast(waiting);
    }
  } catch (_) {
    /* no storage: nothing was left for this page */
  }

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

  // Two versions one over the other: the slider says how much of the second shows.
  function comparing(root) {
    for (const box of $$("[data-compare]", root)) {
      const range = $("[data-compare-range]", box.parentElement);
      if (!range) continue;
      const show = () => box.style.setProperty("--cut", `${100 - Number(range.value)}%`);
      range.addEventListener("input", show);
      show();
    }
  }
  htmx.onLoad(comparing);

  // An image whose file is gone leaves its box empty rather than a broken-image icon.
  document.addEventListener(
    "error",
    (event) => {
      if (event.target instanceof HTMLImageElement) event.target.classList.add("missing");
    },
    true,
  );

  // --- batches: a job for each of some images ----------------------------------------------------

  // A batch runs a job once for each chosen image (a restyle is one, of the restyle job); the
  // job's page shows its progress, so that is where a started batch goes.
  async function startBatch(url, body) {
    let response;
    try {
      response = await fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(body),
      });
    } catch (_) {
      toast("Cog could not be reached; nothing was started.", true);
      return false;
    }
    const answer = await response.json().catch(() => null);
    if (!response.ok) {
      toast(typeof answer?.detail === "string" ? answer.detail : `Refused (${response.status}).`, true);
      return false;
    }
    window.location.assign(`/cog/jobs/${encodeURIComponent(answer.job_id)}#batch-${answer.id}`);
    return true;
  }

  // "Run a job…": the job chosen in the dialog, for `images` (ids, or a gallery's filter).
  function runJob(form, images) {
    const job = $("[name=job_id]", form).value;
    return startBatch(`/api/jobs/${encodeURIComponent(job)}/batches`, images);
  }

  // A dialog's form while `work` sends what it asks for: its button busy, the dialog closed
  // when it was refused (the toast says why).
  async function sending(form, work) {
    const submit = $("button[type=submit]", form);
    submit.setAttribute("aria-busy", "true");
    submit.disabled = true;
    const ok = await work();
    submit.removeAttribute("aria-busy");
    submit.disabled = false;
    if (!ok) form.closest("dialog")?.close();
  }

  // "Run a job…" on an image's page, for that image.
  document.addEventListener("submit", (event) => {
    const form = event.target.closest?.("form[data-batch-form=run-job][data-image-id]");
    if (!form) return;
    event.preventDefault();
    sending(form, () => runJob(form, { image_ids: [form.dataset.imageId] }));
  });

  // --- selecting images in the gallery -------------------------------------------------------------

  // A checkbox on every thumbnail selects it; once one is selected (or "Select" is pressed), a
  // click anywhere on a thumbnail selects it instead of opening it, and Shift selects the range
  // from the one before. The selection is a list of ids, or, with "Select all", the whole filter
  // (the series and its tag), loaded or not. Batches go to the JSON API; the page then loads
  // again to show what changed.
  // Search results are selected the same way: their box stays while searches swap its content.
  const galleryBox = $("#gallery") || $("#search-results");
  const selectionBar = $("#selection-bar");
  if (galleryBox && selectionBar) selecting(galleryBox, selectionBar);

  function selecting(gallery, bar) {
    const seriesId = gallery.dataset.seriesId;
    const tag = gallery.dataset.tag || "";
    // The number of images the gallery's filter matches; an upload adds to it.
    const total = () => Number(gallery.dataset.total || 0);
    const count = $("#selection-count", bar);
    // Search results bring their own "Select" button with each search.
    const modeButton = () => $("[data-select-mode]");
    // Only a series' gallery has a filter to select all of (search results have none).
    const matchingButton = $("[data-select-matching]", bar);
    const picked = new Set();
    let everything = false; // the whole filter, beyond what is loaded
    let on = false;
    let anchor = null; // the id a Shift range starts from

    const boxes = () => $$(".tile-box", gallery);
    const chosen = () => (everything ? total() : picked.size);
    const images = (n) => `${n.toLocaleString()} image${n === 1 ? "" : "s"}`;

    function setMode(value) {
      on = value;
      gallery.classList.toggle("selecting", on);
      modeButton()?.setAttribute("aria-pressed", String(on));
      bar.hidden = !on;
      if (!on) {
        picked.clear();
        everything = false;
        anchor = null;
      }
      render();
    }

    function render() {
      for (const box of boxes()) {
        const selected = everything || picked.has(box.dataset.id);
        box.classList.toggle("selected", selected);
        const check = $(".tile-check", box);
        if (check) check.checked = selected;
      }
      const n = chosen();
      if (everything) count.textContent = `All ${images(n)} selected`;
      else count.textContent = n ? `${images(n)} selected` : "Nothing selected";
      for (const button of $$("[data-batch]", bar)) button.disabled = n === 0;
      const loaded = boxes().length;
      $("[data-select-page]", bar).hidden = everything || loaded === 0 || picked.size === loaded;
      if (matchingButton) {
        matchingButton.hidden = everything || total() <= loaded;
        matchingButton.textContent = `Select all ${total().toLocaleString()} ${tag ? `tagged “${tag}”` : "in this series"}`;
      }
    }

    function choose(box, value, range) {
      if (everything) {
        // Leaving "all": what stays selected is every loaded thumbnail, as shown.
        everything = false;
        for (const other of boxes()) picked.add(other.dataset.id);
      }
      const list = boxes();
      const from = range && anchor ? list.findIndex((b) => b.dataset.id === anchor) : -1;
      const to = list.indexOf(box);
      const span = from >= 0 ? list.slice(Math.min(from, to), Math.max(from, to) + 1) : [box];
      for (const one of span) {
        if (value) picked.add(one.dataset.id);
        else picked.delete(one.dataset.id);
      }
      anchor = box.dataset.id;
      if (!on) setMode(true);
      else render();
    }

    gallery.addEventListener("click", (event) => {
      const box = event.target.closest(".tile-box");
      if (!box) return;
      const check = event.target.closest(".tile-check");
      if (check) {
        choose(box, check.checked, event.shiftKey);
        return;
      }
      if (!on || event.ctrlKey || event.metaKey) return; // a plain click opens the image
      event.preventDefault();
      choose(box, !(everything || picked.has(box.dataset.id)), event.shiftKey);
      $(".tile-check", box)?.focus({ preventScroll: true });
    });

    // Thumbnails loaded later (scrolling, uploads) show the selection too.
    new MutationObserver(() => {
      if (on) render();
    }).observe(gallery, { childList: true, subtree: true });
    // Another search shows other images: what was selected among the last ones is let go.
    document.addEventListener("htmx:afterSwap", (event) => {
      if (event.detail.target === gallery) setMode(false);
    });

    document.addEventListener("click", (event) => {
      if (event.target.closest?.("[data-select-mode]")) setMode(!on);
    });
    $("[data-select-done]", bar).addEventListener("click", () => {
      setMode(false);
      modeButton()?.focus();
    });
    $("[data-select-page]", bar).addEventListener("click", () => {
      for (const box of boxes()) picked.add(box.dataset.id);
      render();
    });
    matchingButton?.addEventListener("click", () => {
      everything = true;
      render();
    });
    document.addEventListener("keydown", (event) => {
      if (event.key !== "Escape" || !on || event.defaultPrevented) return;
      if (document.querySelector("dialog[open]") || typing(event.target)) return;
      event.preventDefault();
      setMode(false);
    });

    // The filter the gallery shows: its series, and its tag when it shows one.
    const shown = () => (tag ? { series_id: seriesId, tag } : { series_id: seriesId });

    // What the API is told: the ids, or the filter the gallery shows.
    function selection() {
      if (everything) return { filter: shown() };
      return { ids: Array.from(picked) };
    }

    async function send(body, done) {
      let response;
      try {
        response = await fetch("/api/images/batch", {
          method: "POST",
          headers: { "Content-Type": "application/json", Accept: "application/json" },
          body: JSON.stringify({ ...body, ...selection() }),
        });
      } catch (_) {
        toast("Cog could not be reached; nothing was changed.", true);
        return false;
      }
      let answer = null;
      try {
        answer = await response.json();
      } catch (_) {
        /* keep null */
      }
      if (!response.ok) {
        const detail = typeof answer?.detail === "string" ? answer.detail : `Refused (${response.status}).`;
        toast(detail, true);
        return false;
      }
      toastAfterReload(done(answer));
      return true;
    }

    // The dialogs (move, tags) come from the server; their forms are sent from here.
    document.addEventListener("htmx:afterSwap", (event) => {
      if (event.detail.target?.id !== "modal") return;
      const text = $("[data-selected-text]", event.detail.target);
      if (text) text.textContent = everything ? `all ${images(chosen())}` : images(chosen());
    });
    document.addEventListener("submit", (event) => {
      const form = event.target.closest?.("form[data-batch-form]:not([data-image-id])");
      if (!form) return;
      event.preventDefault();
      sending(form, () => batch(form, form.dataset.batchForm));
    });

    function batch(form, action) {
      if (action === "restyle") return restyle(form);
      if (action === "run-job") return runJob(form, chosenImages());
      if (action === "move") {
        const select = $("select[name=series_id]", form);
        const where = select.selectedOptions[0]?.textContent.trim() || "the series";
        return send({ action, series_id: select.value }, (a) => `Moved ${images(a.count)} to “${where}”.`);
      }
      const tags = $("input[name=tags]", form)
        .value.split(",")
        .map((t) => t.trim())
        .filter(Boolean);
      return send({ action, tags }, (a) =>
        action === "tag"
          ? `Tagged ${images(a.count)} “${a.tags.join(", ")}”.`
          : `Removed “${a.tags.join(", ")}” from ${images(a.count)}.`,
      );
    }

    // "A new series…" as the restyle's target asks for its title.
    document.addEventListener("change", (event) => {
      const select = event.target.closest?.("form[data-batch-form=restyle] select[name=target_series_id]");
      if (!select) return;
      const title = $("[data-new-target]", select.form);
      title.hidden = select.value !== "new";
      $("input", title).required = select.value === "new";
    });

    // What a batch is for: the ids, or the filter the gallery shows.
    const chosenImages = () => (everything ? shown() : { image_ids: Array.from(picked) });

    function restyle(form) {
      const field = (name) => $(`[name=${name}]`, form).value;
      return startBatch("/api/restyles", {
        ...chosenImages(),
        style_series_id: field("style_series_id"),
        ...(field("target_series_id") === "new"
          ? { target_title: field("target_title") }
          : { target_series_id: field("target_series_id") }),
        style_image_count: Number(field("style_image_count") || 0),
        prompt: field("prompt"),
      });
    }

    $("[data-batch=delete]", bar).addEventListener("click", async () => {
      const n = chosen();
      const files = n === 1 ? "Its file is" : "Their files are";
      const yes = await ask(`Delete ${images(n)}? ${files} removed for good.`, true);
      if (yes) await send({ action: "delete" }, (a) => `Deleted ${images(a.count)}.`);
    });

    $("[data-batch=download]", bar).addEventListener("click", () => {
      if (everything) {
        const query = new URLSearchParams({ include_subseries: "false" });
        if (tag) query.set("tag", tag);
        window.location.assign(`/api/series/${encodeURIComponent(seriesId)}/export?${query}`);
        return;
      }
      // A form, so the browser saves the archive as it streams in.
      const form = document.createElement("form");
      form.method = "post";
      form.action = "/cog/images/export";
      form.hidden = true;
      const ids = document.createElement("input");
      ids.type = "hidden";
      ids.name = "ids";
      ids.value = Array.from(picked).join(",");
      form.append(ids);
      document.body.append(form);
      form.submit();
      form.remove();
      toast(`Preparing a zip of ${images(picked.size)}…`);
    });

    render();
  }

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
      if (!gallery.dataset.tag) gallery.dataset.total = String(Number(gallery.dataset.total || 0) + 1);
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

    // The same markup as the `gallery_tile` macro in templates/_macros.html.
    function tile(image) {
      const label = image.original_filename || image.prompt || "Image";
      const scale = Math.min(1, thumbPx / Math.max(image.width, image.height, 1));
      const box = document.createElement("div");
      box.className = "tile-box";
      box.dataset.id = image.id;
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
      const check = document.createElement("input");
      check.type = "checkbox";
      check.className = "tile-check";
      check.value = image.id;
      check.setAttribute("aria-label", `Select ${label.slice(0, 80)}`);
      box.append(link, check);
      return box;
    }

    const megabytes = (bytes) => `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  }
})();
