// Edits of a video's annotation: prompts (clicks, boxes), clears, undo / redo, objects
// and the video's name. Each goes through app.mutate, so they reach the server one after
// another in the order they were made, and each shows the server's answer.

import { api, videoPath } from "./api.js";

const $ = (id) => document.getElementById(id);

export class Editor {
  /** app: the App of app.js (video, frame, activeObject, mutate, applyResult, ...). */
  constructor(app) {
    this.app = app;
    $("add-object").addEventListener("click", () => this.newObject());
    $("undo-btn").addEventListener("click", () => this.undoRedo("undo"));
    $("redo-btn").addEventListener("click", () => this.undoRedo("redo"));
    $("clear-btn").addEventListener("click", () => this.clearFrame());
    $("video-name").addEventListener("change", (e) => this.renameVideo(e.target.value.trim()));
  }

  /** Create an object on the server and make it the active one. */
  async createObject() {
    const app = this.app;
    const { object, version } = await api("POST", videoPath(app.video.id, "objects"), {});
    // The server's "changed" event may have refreshed the video, with this object, while
    // the answer was on its way: add it once. The version keeps an older detail (asked for
    // before the object existed, answered after) from taking it away again.
    if (!app.video.objects.some((o) => o.id === object.id)) app.video.objects.push(object);
    app.video.version = Math.max(app.video.version, version);
    app.objectMap.set(object.id, object);
    app.activeObject = object.id;
    app.renderObjects();
    return object;
  }

  /** The active object's id; a first click or import creates one when there is none. */
  async ensureObject() {
    const app = this.app;
    if (app.activeObject !== null) return app.activeObject;
    return (await this.createObject()).id;
  }

  addPrompt(prompt) {
    const app = this.app;
    if (!app.video) return;
    const frame = app.frame;
    // Draw the click at once; the server's list replaces it when the mask comes back.
    const shown = { object: app.activeObject, points: prompt.points || [], labels: prompt.labels || [], box: prompt.box || null };
    app.view.setPrompts([...app.view.prompts, shown], app.objectMap, app.activeObject);
    app.setStatus("Segmenting…", "busy");
    app.mutate(async () => {
      const object = await this.ensureObject();
      const result = await api("POST", videoPath(app.video.id, "prompts"), { frame, object, ...prompt });
      await app.applyResult(result);
      const name = app.objectName(object);
      const score = result.score !== null && result.score !== undefined ? ` (predicted IoU ${result.score.toFixed(2)})` : "";
      if (result.objects.includes(object)) app.setStatus(`${name}: mask on frame ${frame}${score}.`);
      else app.setStatus(`${name}: no mask on frame ${frame}; add a positive click or a box.`, "error");
    });
  }

  clearFrame() {
    const app = this.app;
    if (!app.video || app.activeObject === null) return;
    const body = { frame: app.frame, object: app.activeObject };
    app.mutate(async () => {
      await app.applyResult(await api("POST", videoPath(app.video.id, "prompts", "clear"), body));
      app.setStatus(`Cleared the prompts of ${app.objectName(body.object)} on frame ${body.frame}.`);
    });
  }

  undoRedo(which) {
    const app = this.app;
    if (!app.video) return;
    app.mutate(async () => {
      const result = await api("POST", videoPath(app.video.id, which), {});
      await app.applyResult(result);
      app.setStatus(`${which === "undo" ? "Undone" : "Redone"} on frame ${result.frame}.`);
    });
  }

  newObject() {
    const app = this.app;
    if (!app.video) return;
    app.mutate(async () => {
      const object = await this.createObject();
      app.setStatus(`${object.name} added: click it on the frame.`);
      app.scheduleRefresh();
    });
  }

  patchObject(id, change) {
    const app = this.app;
    app.mutate(async () => {
      const { object } = await api("PATCH", videoPath(app.video.id, "objects", id), change);
      app.setStatus(`Saved ${object.name}.`);
      app.scheduleRefresh();
    });
  }

  deleteObject(id, name) {
    const app = this.app;
    if (!confirm(`Delete ${name} and all its prompts and masks? This cannot be undone.`)) return;
    app.mutate(async () => {
      await api("DELETE", videoPath(app.video.id, "objects", id));
      app.setStatus(`Deleted ${name}.`);
      app.scheduleRefresh();
    });
  }

  renameVideo(name) {
    const app = this.app;
    if (!app.video || !name) return;
    app.mutate(async () => {
      await api("PATCH", videoPath(app.video.id), { name });
      app.setStatus(`Renamed to “${name}”.`);
      app.refreshVideos();
    });
  }
}
