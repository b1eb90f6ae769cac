// Import of masks (a PNG for the current frame) and exports (DAVIS PNGs, COCO RLE, SA-V
// JSON, overlay video): made on the server, downloaded through a link the page keeps.

import { api, postForm, videoPath } from "./api.js";
import { addExportLink } from "./panels.js";

const $ = (id) => document.getElementById(id);

/** app: the App of app.js. */
export function bindTransfer(app) {
  $("import-file").addEventListener("change", (e) => {
    importMask(app, e.target.files[0]);
    e.target.value = "";
  });
  for (const button of document.querySelectorAll("[data-export]")) {
    button.addEventListener("click", () => exportAs(app, button.dataset.export));
  }
}

function importMask(app, file) {
  if (!app.video || !file) return;
  const form = new FormData();
  form.append("file", file);
  form.append("frame", String(app.frame));
  const forActive = $("import-target").value === "active";
  app.mutate(async () => {
    if (forActive) form.append("object", String(await app.editor.ensureObject()));
    const result = await postForm(videoPath(app.video.id, "masks", "import"), form);
    await app.applyResult(result);
    const objects = result.objects.join(", ") || "none";
    app.setStatus(`Imported ${file.name} on frame ${result.frame} (objects ${objects}).`);
  });
}

async function exportAs(app, format) {
  if (!app.video) return;
  await app.queue; // the export must include the clicks still being saved
  app.setStatus(`Exporting ${format}…`, "busy");
  try {
    const result = await api("POST", videoPath(app.video.id, "exports"), { format });
    addExportLink($("export-links"), result).click();
    // YOLO-seg leaves out the objects without a label: say how many, or they go unnoticed.
    const left = result.unlabelled_objects;
    const note = left ? ` ${left} object(s) without a label left out: give them a label and export again.` : "";
    app.setStatus(`Exported ${result.file} (saved on the server as ${result.path}).${note}`, left ? "error" : "info");
  } catch (err) {
    app.showError(err);
  }
}

/** List the exports already made (they survive reloads and restarts). */
export async function refreshExports(app) {
  const id = app.video.id;
  try {
    const { exports } = await api("GET", videoPath(id, "exports"));
    if (app.video.id !== id) return; // another video was opened meanwhile
    const list = $("export-links");
    list.replaceChildren();
    for (const result of [...exports].reverse()) addExportLink(list, result);
  } catch (err) {
    app.showError(err);
  }
}
