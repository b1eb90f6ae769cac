// Review hints: the tracked frames the server flags as likely wrong ("needs review"),
// drawn per object under the timeline; F / Shift+F jump to the next / previous flagged
// frame, and Review mode walks the server's `order` (flagged frames, highest score
// first), marking each frame it shows as reviewed (POST review/seen).

import { api, videoPath } from "./api.js";

const $ = (id) => document.getElementById(id);

const LANE_PX = 9; // CSS pixels per object lane
const MAX_LANES = 8; // more objects share the strip's height
const TO_CHECK = "#f43f5e";
const REVIEWED = "#4ade80";

const key = (frame, object) => `${frame}:${object}`;

export class ReviewControl {
  /** app: the App of app.js (video, frame, activeObject, setFrame, mutate, ...). */
  constructor(app) {
    this.app = app;
    this.data = null; // GET /review body of the open video
    this.rows = new Map(); // "frame:object" -> row
    this.frames = []; // flagged frames (any object), ascending
    this.mode = false; // Review mode on
    this.index = -1; // position in data.order while reviewing
    this.target = null; // the {frame, object} the walk is going to
    this.seq = 0;
    this.strip = $("review-strip");
    $("review-btn").addEventListener("click", () => this.toggleMode());
    $("flag-prev").addEventListener("click", () => this.step(-1));
    $("flag-next").addEventListener("click", () => this.step(1));
    this.strip.addEventListener("pointerdown", (e) => this.onStripClick(e));
    new ResizeObserver(() => this.draw()).observe(this.strip);
  }

  /** Forget the last video's hints (another video is being opened). */
  reset() {
    this.seq += 1;
    this.apply({ rows: [], flagged: {}, order: [] });
    this.setMode(false);
  }

  async refresh() {
    const app = this.app;
    if (!app.video) return;
    const seq = ++this.seq;
    const vid = app.video.id;
    try {
      const data = await api("GET", videoPath(vid, "review"));
      if (seq === this.seq && app.video && app.video.id === vid) this.apply(data);
    } catch (err) {
      if (seq === this.seq) app.showError(err);
    }
  }

  apply(data) {
    this.data = data;
    this.rows = new Map(data.rows.map((r) => [key(r.frame, r.object), r]));
    this.frames = [...new Set(Object.values(data.flagged).flat())].sort((a, b) => a - b);
    if (this.mode && this.index >= 0) {
      // The order may have changed (tracked again): stay on the entry being looked at.
      const here = this.target || { frame: this.app.frame, object: this.app.activeObject };
      const at = data.order.findIndex((o) => o.frame === here.frame && o.object === here.object);
      this.index = at >= 0 ? at : Math.min(this.index, data.order.length - 1);
    }
    this.render();
  }

  /** Flagged rows of a frame, highest score first. */
  flaggedAt(frame) {
    const out = [];
    for (const [obj, frames] of Object.entries(this.data ? this.data.flagged : {})) {
      if (frames.includes(frame)) out.push(this.rows.get(key(frame, Number(obj))) || { frame, object: Number(obj), score: null, reviewed: false });
    }
    return out.sort((a, b) => (b.score || 0) - (a.score || 0));
  }

  // ---- moving --------------------------------------------------------------------------

  /** F (dir 1) / Shift+F (dir -1): the next / previous flagged frame, or review step. */
  step(dir) {
    const app = this.app;
    if (!app.video) return;
    if (this.mode) {
      this.walk(this.index + dir);
      return;
    }
    const cur = app.frame;
    const frame = dir > 0 ? this.frames.find((f) => f > cur) : this.frames.findLast((f) => f < cur);
    if (frame === undefined) {
      const none = this.frames.length ? `no flagged frame ${dir > 0 ? "after" : "before"} frame ${cur}` : "no flagged frames (track first)";
      app.setStatus(`Review: ${none}.`);
      return;
    }
    const rows = this.flaggedAt(frame);
    // The object to correct there becomes the active one (unless it already is flagged).
    if (!rows.some((r) => r.object === app.activeObject)) app.selectObject(rows[0].object);
    app.setFrame(frame);
    app.setStatus(`Frame ${frame}: flagged for ${this.describe(rows)}.`);
  }

  toggleMode() {
    this.setMode(!this.mode);
    if (this.mode) {
      const order = this.data ? this.data.order : [];
      const first = order.findIndex((o) => !this.isReviewed(o.frame, o.object));
      this.index = -1;
      this.walk(first >= 0 ? first : 0);
    }
  }

  setMode(on) {
    const app = this.app;
    this.mode = Boolean(on) && Boolean(app.video);
    this.target = null;
    document.body.classList.toggle("reviewing", this.mode);
    $("review-btn").setAttribute("aria-pressed", String(this.mode));
    $("review-btn").textContent = this.mode ? "Stop review" : "Review";
    this.render();
  }

  /** Go to entry `i` of the review order (its frame, its object). */
  walk(i) {
    const app = this.app;
    const order = this.data ? this.data.order : [];
    if (!order.length) {
      app.setStatus("Review: nothing is flagged (track first, or every frame looks fine).");
      this.setMode(false);
      return;
    }
    if (i >= order.length) {
      app.setStatus(`Review: that was the last of ${order.length} flagged frames (Shift+F goes back).`);
      return;
    }
    this.index = Math.max(0, i);
    const entry = order[this.index];
    this.target = entry;
    app.selectObject(entry.object);
    app.setFrame(entry.frame);
    const row = this.rows.get(key(entry.frame, entry.object));
    const name = this.app.objectName(entry.object);
    const score = row && row.score !== null ? ` (score ${row.score.toFixed(2)})` : "";
    app.setStatus(`Review ${this.index + 1}/${order.length}: frame ${entry.frame}, ${name}${score}. F: next, Shift+F: back.`);
    this.render();
  }

  /** Called by app.setFrame for every frame shown: in Review mode the frame was looked at. */
  onFrame(frame) {
    const target = this.target && this.target.frame === frame ? this.target : null;
    this.target = null;
    if (this.mode) {
      const object = target ? target.object : null;
      const open = this.flaggedAt(frame).filter((r) => !r.reviewed && (object === null || r.object === object));
      if (open.length) this.markSeen(frame, object);
    }
    this.render();
  }

  markSeen(frame, object) {
    const app = this.app;
    const vid = app.video.id;
    app.mutate(async () => {
      await api("POST", videoPath(vid, "review", "seen"), { frame, object });
      if (!app.video || app.video.id !== vid) return;
      for (const r of this.rows.values()) {
        if (r.frame === frame && (object === null || r.object === object)) r.reviewed = true;
      }
      this.render();
    });
  }

  /** The server says `objects` were marked reviewed on `frame` (by any page). */
  onReviewed({ frame, objects }) {
    let changed = false;
    for (const object of objects) {
      const row = this.rows.get(key(frame, object));
      if (row && !row.reviewed) {
        row.reviewed = true;
        changed = true;
      }
    }
    if (changed) this.render();
  }

  isReviewed(frame, object) {
    const row = this.rows.get(key(frame, object));
    return Boolean(row && row.reviewed);
  }

  onStripClick(e) {
    const app = this.app;
    const lanes = this.lanes();
    if (!app.video || !lanes.length) return;
    const rect = this.strip.getBoundingClientRect();
    const frame = app.timeline.clampFrame(Math.floor(((e.clientX - rect.left) / rect.width) * app.video.num_frames));
    const lane = Math.min(lanes.length - 1, Math.floor(((e.clientY - rect.top) / rect.height) * lanes.length));
    app.selectObject(lanes[lane].id);
    app.setFrame(frame);
  }

  // ---- showing -------------------------------------------------------------------------

  describe(rows) {
    return rows.map((r) => {
      const notes = [];
      if (r.score !== null && r.score !== undefined) notes.push(`score ${r.score.toFixed(2)}`);
      if (r.reviewed) notes.push("reviewed");
      return `${this.app.objectName(r.object)}${notes.length ? ` (${notes.join(", ")})` : ""}`;
    }).join("; ");
  }

  render() {
    const rows = this.data ? this.data.rows : [];
    const flagged = rows.filter((r) => r.flagged);
    const seen = flagged.filter((r) => r.reviewed).length;
    $("review-count").textContent = rows.length ? `${flagged.length} flagged · ${seen} reviewed` : "";
    const order = this.data ? this.data.order : [];
    $("review-pos").textContent = this.mode && this.index >= 0 ? `${this.index + 1} / ${order.length}` : "";
    const here = this.app.video ? this.flaggedAt(this.app.frame) : [];
    $("review-info").textContent = here.length ? `flagged: ${this.describe(here)}` : "";
    this.draw();
  }

  /** The objects with a lane (every object of the video, in list order). */
  lanes() {
    const video = this.app.video;
    return video && this.data && this.data.rows.length ? video.objects : [];
  }

  draw() {
    const c = this.strip;
    const lanes = this.lanes();
    c.hidden = !lanes.length;
    if (!lanes.length) return;
    const shown = Math.min(lanes.length, MAX_LANES);
    c.style.height = `${shown * LANE_PX}px`;
    const w = Math.max(1, Math.round(c.clientWidth * devicePixelRatio));
    const h = Math.max(1, Math.round(shown * LANE_PX * devicePixelRatio));
    if (c.width !== w) c.width = w;
    if (c.height !== h) c.height = h;
    const ctx = c.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    const n = this.app.video.num_frames;
    const fw = w / n;
    const lh = h / lanes.length;
    lanes.forEach((obj, i) => {
      const y = i * lh;
      ctx.globalAlpha = 0.18; // the lane, tinted with its object's colour
      ctx.fillStyle = obj.color;
      ctx.fillRect(0, y, w, lh - 1);
      ctx.globalAlpha = 1;
      for (const frame of (this.data.flagged[String(obj.id)] || [])) {
        const reviewed = this.isReviewed(frame, obj.id);
        ctx.fillStyle = reviewed ? REVIEWED : TO_CHECK;
        // Reviewed: a lower, green mark; still to check: the whole lane, rose.
        const top = reviewed ? y + lh * 0.45 : y;
        ctx.fillRect(Math.floor(frame * fw), top, Math.max(2, Math.ceil(fw)), y + lh - 1 - top);
      }
    });
    const cur = this.app.frame;
    ctx.fillStyle = "#38bdf8";
    ctx.fillRect(Math.floor(cur * fw + fw / 2) - 1, 0, 2, h);
  }
}
