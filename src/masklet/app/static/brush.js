// Brush and eraser: paint or erase the active object's mask on the current frame.
// The stroke is drawn on the mask canvas while the pointer moves (nothing is sent yet);
// on pointer-up the whole stroke goes to the server in one POST /brush, which stores it
// as that frame's mask prompt (undo, redo and tracking treat it like any edit), and the
// mask it answers replaces the drawn preview.

import { api, videoPath } from "./api.js";

const $ = (id) => document.getElementById(id);

const PREVIEW_ALPHA = 120 / 255; // the mask canvas's fill alpha (view.js), so paint looks alike
const MAX_POINTS = 2000; // the server's default --max-brush-points
const MIN_RADIUS = 1;
const MAX_RADIUS = 200;

export class BrushTool {
  /** app: the App of app.js (view, video, frame, activeObject, editor, mutate, ...). */
  constructor(app) {
    this.app = app;
    this.mode = null; // null (clicks and boxes), "paint" or "erase"
    this.stroke = null; // the stroke being drawn: points, the mask before it, its layer
    this.cursor = null; // [x, y] in frame pixels while the pointer is over the frame
    this.frameRequested = false;
    $("tool-points").addEventListener("click", () => this.setMode(null));
    $("tool-brush").addEventListener("click", () => this.setMode("paint"));
    $("tool-eraser").addEventListener("click", () => this.setMode("erase"));
    $("brush-radius").addEventListener("input", () => this.showRadius());
    this.showRadius();
  }

  /** The radius in frame pixels. */
  get radius() {
    return Number($("brush-radius").value);
  }

  /** Change the radius by `delta` pixels (the [ and ] keys). */
  nudgeRadius(delta) {
    const input = $("brush-radius");
    const step = Math.max(1, Math.round(this.radius * 0.2));
    input.value = String(Math.min(MAX_RADIUS, Math.max(MIN_RADIUS, this.radius + delta * step)));
    this.showRadius();
  }

  showRadius() {
    $("brush-radius-value").textContent = `${this.radius} px`;
    this.app.view.drawPrompts();
  }

  /** Switch tools; choosing the tool already on goes back to clicks and boxes. */
  toggle(mode) {
    this.setMode(this.mode === mode ? null : mode);
  }

  setMode(mode) {
    this.cancel();
    this.mode = mode;
    this.app.view.tool = mode ? this : null;
    this.app.view.cancelDrag(); // also redraws the prompts, without the old cursor
    for (const [id, m] of [["tool-points", null], ["tool-brush", "paint"], ["tool-eraser", "erase"]]) {
      $(id).classList.toggle("on", m === mode);
      $(id).setAttribute("aria-pressed", String(m === mode));
    }
    document.body.dataset.tool = mode || "points";
    if (mode) {
      const what = mode === "paint" ? "Brush" : "Eraser";
      this.app.setStatus(`${what}: drag over the frame to ${mode} the active object's mask (radius ${this.radius} px; [ and ] change it).`);
    }
  }

  // ---- pointer (called by view.js while this tool is on) ---------------------------------

  down(e, point) {
    const app = this.app;
    if (!app.video || e.button !== 0) return false;
    if (this.mode === "erase" && app.activeObject === null) {
      app.setStatus("Nothing to erase: there is no object yet.", "error");
      return false;
    }
    const view = app.view;
    const layer = new OffscreenCanvas(view.width, view.height);
    const ctx = layer.getContext("2d");
    const obj = app.objectMap && app.objectMap.get(app.activeObject);
    ctx.strokeStyle = ctx.fillStyle = this.mode === "paint" && obj ? obj.color : "#ffffff";
    ctx.lineWidth = 2 * this.radius;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    const mctx = view.maskCanvas.getContext("2d");
    this.stroke = {
      frame: app.frame, mode: this.mode, radius: this.radius, points: [point], layer, ctx,
      before: mctx.getImageData(0, 0, view.width, view.height),
    };
    ctx.beginPath();
    ctx.arc(point[0], point[1], this.radius, 0, 2 * Math.PI);
    ctx.fill();
    this.cursor = point;
    this.requestDraw();
    return true;
  }

  move(e, point) {
    this.cursor = point;
    const stroke = this.stroke;
    if (stroke) {
      const last = stroke.points[stroke.points.length - 1];
      // Points closer than a quarter radius add nothing the joined discs do not cover.
      if (Math.hypot(point[0] - last[0], point[1] - last[1]) >= Math.max(1, stroke.radius / 4)) {
        stroke.points.push(point);
        stroke.ctx.beginPath();
        stroke.ctx.moveTo(last[0], last[1]);
        stroke.ctx.lineTo(point[0], point[1]);
        stroke.ctx.stroke();
      }
    }
    this.requestDraw();
  }

  up(e, point) {
    const stroke = this.stroke;
    if (!stroke) return;
    this.move(e, point);
    this.stroke = null;
    this.send(stroke);
  }

  cancel() {
    if (!this.stroke) return;
    const { before } = this.stroke;
    this.stroke = null;
    this.app.view.maskCanvas.getContext("2d").putImageData(before, 0, 0);
  }

  leave() {
    this.cursor = null;
    this.app.view.drawPrompts();
  }

  /** The radius outline under the pointer (view.js calls this after drawing prompts). */
  overlay(ctx, s) {
    if (!this.cursor) return;
    ctx.beginPath();
    ctx.arc(this.cursor[0], this.cursor[1], this.radius, 0, 2 * Math.PI);
    ctx.setLineDash(this.mode === "erase" ? [4 * s, 3 * s] : []);
    ctx.lineWidth = 1.5 * s;
    ctx.strokeStyle = "#ffffff";
    ctx.stroke();
    ctx.setLineDash([]);
  }

  // ---- drawing and sending -----------------------------------------------------------------

  /** Redraw at most once per animation frame however fast the pointer events come. */
  requestDraw() {
    if (this.frameRequested) return;
    this.frameRequested = true;
    requestAnimationFrame(() => {
      this.frameRequested = false;
      this.drawStroke();
      this.app.view.drawPrompts();
    });
  }

  /** The mask as it was before the stroke, with the stroke painted on or erased from it. */
  drawStroke() {
    const stroke = this.stroke;
    if (!stroke) return;
    const ctx = this.app.view.maskCanvas.getContext("2d");
    ctx.putImageData(stroke.before, 0, 0);
    ctx.save();
    if (stroke.mode === "erase") ctx.globalCompositeOperation = "destination-out";
    else ctx.globalAlpha = PREVIEW_ALPHA;
    ctx.drawImage(stroke.layer, 0, 0);
    ctx.restore();
  }

  send(stroke) {
    const app = this.app;
    this.drawStroke();
    const points = thin(stroke.points, MAX_POINTS).map(([x, y]) => [round2(x), round2(y)]);
    const verb = stroke.mode === "paint" ? "Painted" : "Erased";
    app.setStatus(stroke.mode === "paint" ? "Painting…" : "Erasing…", "busy");
    app.mutate(async () => {
      try {
        const object = await app.editor.ensureObject();
        const body = { frame: stroke.frame, object, mode: stroke.mode, radius: stroke.radius, points };
        const result = await api("POST", videoPath(app.video.id, "brush"), body);
        await app.applyResult(result);
        app.setStatus(`${verb} ${app.objectName(object)} on frame ${stroke.frame}.`);
      } catch (err) {
        // Refused: the preview must not stay on screen as if it were stored.
        if (app.frame === stroke.frame) app.redraw();
        throw err;
      }
    });
  }
}

function round2(v) {
  return Math.round(v * 100) / 100;
}

/** At most `max` points of a stroke, evenly spread, always keeping the first and last. */
function thin(points, max) {
  if (points.length <= max) return points;
  const out = [];
  for (let i = 0; i < max - 1; i++) out.push(points[Math.floor((i * (points.length - 1)) / (max - 1))]);
  out.push(points[points.length - 1]);
  return out;
}
