// The project's label set (name, colour, optional YOLO class id), edited in the Labels
// panel, and the label select of each object in the Objects panel. Labels belong to the
// server's data folder, not to a video: every session of the project shares them.

import { api, videoPath } from "./api.js";
import { el } from "./panels.js";

const $ = (id) => document.getElementById(id);

// Colours offered for a new label, in turn (the user can change them).
const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"];

export class LabelSet {
  /** app: the App of app.js (mutate, setStatus, renderObjects, editor, scheduleRefresh). */
  constructor(app) {
    this.app = app;
    this.labels = [];
    $("label-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.create();
    });
  }

  async refresh() {
    const { labels } = await api("GET", "/api/labels");
    this.labels = labels;
    this.render();
    this.app.renderObjects(); // the objects' label selects list the labels
  }

  byId(id) {
    return this.labels.find((l) => l.id === id) || null;
  }

  render() {
    const list = $("label-list");
    list.replaceChildren(...this.labels.map((label) => this.row(label)));
    if (!this.labels.length) list.append(el("li", { class: "empty" }, "No labels yet: add one below."));
    $("label-color").value = PALETTE[this.labels.length % PALETTE.length];
  }

  row(label) {
    return el("li", { class: "label", dataset: { labelId: String(label.id) } },
      el("input", {
        type: "text", value: label.name, "aria-label": `Name of label ${label.id}`,
        onchange: (e) => {
          const name = e.target.value.trim();
          if (name) this.patch(label.id, { name });
          else e.target.value = label.name;
        },
        onkeydown: (e) => { if (e.key === "Enter") e.target.blur(); },
      }),
      el("input", {
        type: "color", value: label.color, title: "Colour", "aria-label": `Colour of label ${label.id}`,
        onchange: (e) => this.patch(label.id, { color: e.target.value }),
      }),
      el("input", {
        type: "number", min: "0", step: "1", class: "yolo", placeholder: "YOLO",
        value: label.yolo_id === null ? "" : String(label.yolo_id),
        title: "YOLO class id (empty: its place in this list)", "aria-label": `YOLO id of label ${label.id}`,
        onchange: (e) => this.patch(label.id, { yolo_id: yoloValue(e.target.value) }),
      }),
      el("button", {
        type: "button", class: "danger small", title: "Delete this label (its objects become unlabelled)",
        onclick: () => this.remove(label),
      }, "×"));
  }

  create() {
    const app = this.app;
    const name = $("label-name").value.trim();
    if (!name) {
      app.setStatus("Type the new label's name first.", "error");
      return;
    }
    const body = { name, color: $("label-color").value };
    const yolo = yoloValue($("label-yolo").value);
    if (yolo !== null) body.yolo_id = yolo;
    app.mutate(async () => {
      const label = await api("POST", "/api/labels", body);
      $("label-name").value = "";
      $("label-yolo").value = "";
      await this.refresh();
      app.setStatus(`Label “${label.name}” added.`);
    });
  }

  patch(id, change) {
    const app = this.app;
    app.mutate(async () => {
      try {
        const label = await api("PATCH", `/api/labels/${id}`, change);
        app.setStatus(`Saved label “${label.name}”.`);
      } finally {
        await this.refresh(); // also puts a refused value back as the server has it
      }
    });
  }

  remove(label) {
    const app = this.app;
    if (!confirm(`Delete the label “${label.name}”? Its objects become unlabelled.`)) return;
    app.mutate(async () => {
      await api("DELETE", `/api/labels/${label.id}`);
      await this.refresh();
      app.setStatus(`Deleted the label “${label.name}”.`);
      app.scheduleRefresh(); // the objects that had it
    });
  }

  /** The label select of object `obj` (an API Object) for the Objects panel. */
  select(obj) {
    const current = obj.label === undefined ? null : obj.label;
    const options = [el("option", { value: "" }, "no label")];
    for (const label of this.labels) {
      options.push(el("option", { value: String(label.id), selected: label.id === current }, label.name));
    }
    return el("select", {
      class: "object-label", "aria-label": `Label of object ${obj.id}`,
      title: "Label (the COCO category and YOLO class of this object)",
      onchange: (e) => this.setObjectLabel(obj.id, e.target.value === "" ? null : Number(e.target.value)),
    }, ...options);
  }

  setObjectLabel(objectId, labelId) {
    const app = this.app;
    app.mutate(async () => {
      const { object } = await api("PATCH", videoPath(app.video.id, "objects", objectId), { label: labelId });
      const label = labelId === null ? null : this.byId(labelId);
      app.setStatus(label ? `${object.name} is now “${label.name}”.` : `${object.name} has no label now.`);
      app.scheduleRefresh();
    });
  }
}

/** The YOLO id typed: a whole number >= 0, or null when empty. */
function yoloValue(text) {
  const t = String(text).trim();
  return t === "" ? null : Number(t);
}
