// The "Open" panel: upload a file, type a path under a server root, or browse the roots.

import { api, postForm } from "./api.js";
import { renderBrowse } from "./panels.js";

const $ = (id) => document.getElementById(id);

/** app: the App of app.js (openVideo, setStatus, showError). */
export function bindOpenPanel(app) {
  let parent = null;

  async function browse(path) {
    try {
      const query = path ? `?path=${encodeURIComponent(path)}` : "";
      const listing = await api("GET", `/api/browse${query}`);
      parent = listing.parent;
      $("browse-path").textContent = listing.path || "server roots";
      $("browse-path").title = listing.path || "";
      $("browse-up").disabled = !listing.path;
      renderBrowse($("browse-list"), listing, {
        enter: (p) => browse(p),
        open: (p, type) => openPath(p, type === "image" ? "images" : null),
      });
    } catch (err) {
      app.showError(err);
    }
  }

  async function openPath(path, kind) {
    $("path-input").value = path;
    const asImages = $("path-as-images").checked;
    app.setStatus(`Opening ${path}…`, "busy");
    try {
      const summary = await api("POST", "/api/videos/open", { path, kind: asImages ? "images" : kind });
      await app.openVideo(summary.id, 0, null);
    } catch (err) {
      app.showError(err);
    }
  }

  async function upload(file) {
    const limit = app.info ? app.info.max_upload_mb : null;
    if (limit && file.size > limit * 1024 * 1024) {
      // Refused here so that a large file is not sent only to be refused by the server.
      const size = (file.size / (1024 * 1024)).toFixed(1);
      app.setStatus(`Error: ${file.name} is ${size} MB; the server takes at most ${limit} MB`, "error");
      return;
    }
    const form = new FormData();
    form.append("file", file);
    app.setStatus(`Uploading ${file.name}…`, "busy");
    try {
      const summary = await postForm("/api/videos/upload", form, (f) =>
        app.setStatus(`Uploading ${file.name}: ${Math.round(100 * f)} %`, "busy"));
      await app.openVideo(summary.id, 0, null);
    } catch (err) {
      app.showError(err);
    }
  }

  $("path-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const path = $("path-input").value.trim();
    if (path) openPath(path, null);
    else app.setStatus("Type a path under one of the server's roots, or pick one below.", "error");
  });
  $("upload-file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    e.target.value = "";
    if (file) upload(file);
  });
  $("browse-up").addEventListener("click", () => browse(parent));
  browse(null);
}
