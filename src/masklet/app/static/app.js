// masklet annotator: the page's state and its wiring to the API.
// Everything shown comes from the server (the page keeps no work of its own), so a reload,
// a second tab or a crash loses nothing; the URL hash remembers video, frame and object.

import { api, fetchBlob, videoPath } from "./api.js";
import { FrameView } from "./view.js";
import { Timeline } from "./timeline.js";
import { markActiveObject, renderMetrics, renderObjects, renderVideos } from "./panels.js";
import { bindKeys } from "./keys.js";
import { bindOpenPanel } from "./opening.js";
import { Editor } from "./editing.js";
import { TrackControl } from "./tracking.js";
import { bindTransfer, refreshExports } from "./transfer.js";
import { StatusLine } from "./status.js";
import { ReviewControl } from "./review.js";
import { LabelSet } from "./labels.js";
import { BrushTool } from "./brush.js";
import { connectEvents } from "./events.js";

const $ = (id) => document.getElementById(id);

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    // An <img> cannot read the error body; fetching it again surfaces the API's detail.
    img.onerror = () => fetchBlob(url).then(() => reject(new Error(`cannot decode ${url}`)), reject);
    img.src = url;
  });
}

function debounce(fn, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

class App {
  constructor() {
    this.status = new StatusLine(this); // first: the others may report on it
    this.video = null; // video detail of the open video
    this.frame = 0;
    this.activeObject = null;
    this.events = null;
    this.disconnected = false; // the events stream dropped and has not said hello again
    this.queue = Promise.resolve(); // mutations run one after another, in click order
    this.pending = 0;
    this.frameSeq = 0; // only the latest frame/mask request may draw
    this.view = new FrameView({
      stage: $("stage"),
      onPoint: (x, y, label) => this.editor.addPrompt({ points: [[x, y]], labels: [label] }),
      onBox: (box) => this.editor.addPrompt({ box }),
    });
    this.timeline = new Timeline({
      slider: $("frame-slider"), number: $("frame-number"), count: $("frame-count"),
      strip: $("timeline-strip"), onSeek: (idx) => this.setFrame(idx),
    });
    this.scheduleRefresh = debounce(() => this.refresh(), 60);
    this.scheduleMetrics = debounce(() => this.refreshMetrics(), 500);
    this.schedulePrepare = debounce(() => this.prepareFrame(), 350);
    this.scheduleTimeline = debounce(() => this.refreshTimeline(), 400);
    this.tracking = new TrackControl(this);
    this.editor = new Editor(this);
    this.review = new ReviewControl(this);
    this.labels = new LabelSet(this);
    this.brush = new BrushTool(this);
    this.bindControls();
    bindKeys(this);
    bindOpenPanel(this);
    bindTransfer(this);
  }

  // ---- status line (status.js; editing, tracking, opening and transfer call these) ------

  setStatus(text, kind = "info") {
    this.status.show(text, kind);
  }

  setProgress(text) {
    this.status.progress(text);
  }

  showError(err) {
    this.status.error(err);
  }

  // ---- start-up and opening ------------------------------------------------------------

  async start() {
    try {
      const info = await api("GET", "/api/info");
      const demo = info.demo_model ? " · demo model: rough masks" : "";
      $("model-info").textContent = `${info.model} · ${info.image_size}px · ${info.device}${demo}`;
      this.info = info;
      // The label set is not needed to open a video: a failure is shown, not fatal.
      await this.labels.refresh().catch((e) => this.showError(e));
      await this.refreshVideos();
      const hash = new URLSearchParams(location.hash.slice(1));
      if (hash.has("video")) {
        await this.openVideo(Number(hash.get("video")), Number(hash.get("frame") || 0),
          hash.has("object") ? Number(hash.get("object")) : null);
      } else {
        this.setStatus("Ready: open a video, a folder of frames or an image.");
      }
    } catch (err) {
      this.showError(err);
    } finally {
      document.body.dataset.started = "1"; // start-up done (what the browser tests wait for)
    }
  }

  async refreshVideos() {
    const { videos } = await api("GET", "/api/videos");
    renderVideos($("video-list"), videos, this.video && this.video.id, {
      open: (id) => this.openVideo(id, 0, null).catch((e) => this.showError(e)),
      remove: (id, name) => this.deleteVideo(id, name),
    });
  }

  async openVideo(id, frame = 0, objectId = null) {
    // Edits made on the open video end on it first: each reads the open video when its
    // turn comes, so a click queued behind another would land on the next video.
    this.setStatus("Opening…", "busy");
    await this.queue;
    this.setStatus("Opening…", "busy");
    const detail = await api("GET", videoPath(id));
    this.video = detail;
    document.body.classList.add("has-video");
    document.body.classList.toggle("images-kind", detail.kind === "images");
    $("video-name").disabled = false;
    $("video-name").value = detail.name;
    $("export-links").replaceChildren();
    this.timeline.setLength(detail.num_frames);
    // The previous video's flags and measures go; this one's come with their answers.
    $("frame-flags").textContent = "";
    $("metrics").replaceChildren();
    this.review.reset();
    this.applyDetail(detail);
    const known = detail.objects.some((o) => o.id === objectId);
    this.activeObject = known ? objectId : detail.objects.length ? detail.objects[0].id : null;
    this.renderObjects();
    connectEvents(this, id);
    await this.setFrame(Number.isFinite(frame) ? frame : 0);
    this.refreshTimeline();
    this.refreshMetrics();
    refreshExports(this);
    this.refreshVideos().catch((e) => this.showError(e));
    const what = detail.kind === "images" ? `${detail.num_frames} image(s)` : `${detail.num_frames} frames`;
    this.setStatus(`Opened “${detail.name}”: ${what}. Click an object to segment it.${this.tracking.resumeHint()}`);
  }

  async deleteVideo(id, name) {
    if (!confirm(`Delete the session “${name}” with all its masks? Files opened by path are kept.`)) return;
    try {
      await api("DELETE", videoPath(id));
      if (this.video && this.video.id === id) {
        history.replaceState(null, "", location.pathname);
        location.reload();
      } else {
        await this.refreshVideos();
      }
    } catch (err) {
      this.showError(err);
    }
  }

  // ---- what the server says ------------------------------------------------------------

  /** Apply a video detail: objects, undo/redo availability, the job. */
  applyDetail(detail) {
    // Answers can come late: a detail of another video (opened since it was asked for), or
    // an older one of this video (asked for before an object was created here, answered
    // after) would undo what the page shows.
    if (this.video && (detail.id !== this.video.id || detail.version < this.video.version)) return;
    this.video = detail;
    this.objectMap = new Map(detail.objects.map((o) => [o.id, o]));
    if (!this.objectMap.has(this.activeObject)) {
      this.activeObject = detail.objects.length ? detail.objects[0].id : null;
    }
    $("undo-btn").disabled = !detail.can_undo;
    $("redo-btn").disabled = !detail.can_redo;
    const size = detail.frame_sizes ? "" : ` · ${detail.width}×${detail.height}`;
    const fps = detail.fps ? ` · ${detail.fps.toFixed(2)} fps` : "";
    $("video-meta").textContent = `${detail.kind}${size}${fps} · v${detail.version}`;
    if (document.activeElement !== $("video-name")) $("video-name").value = detail.name;
    for (const fmt of ["sav", "review-csv"]) {
      document.querySelector(`[data-export="${fmt}"]`).disabled = detail.kind === "images";
    }
    this.tracking.update(detail.track);
    this.renderObjects();
  }

  renderObjects() {
    if (!this.video) return;
    renderObjects($("object-list"), this.video.objects, this.activeObject, {
      select: (id) => this.selectObject(id),
      rename: (id, name) => this.editor.patchObject(id, { name }),
      recolour: (id, color) => this.editor.patchObject(id, { color }),
      remove: (id, name) => this.editor.deleteObject(id, name),
      labelSelect: (obj) => this.labels.select(obj),
    });
    this.view.setPrompts(this.view.prompts, this.objectMap, this.activeObject);
    this.writeHash();
  }

  async refresh() {
    if (!this.video) return;
    try {
      this.applyDetail(await api("GET", videoPath(this.video.id)));
      await this.redraw();
      this.refreshTimeline();
      this.scheduleMetrics();
    } catch (err) {
      this.showError(err);
    }
  }

  async refreshTimeline() {
    if (!this.video) return;
    const id = this.video.id;
    try {
      const status = await api("GET", videoPath(id, "timeline"));
      if (this.video.id !== id) return; // another video was opened meanwhile
      const colours = new Map(this.video.objects.map((o) => [o.id, o.color]));
      this.timeline.setStatus(status, colours);
      this.showFrameFlags(status);
      // The hints of a whole video are read once tracking ends, not at every progress step.
      if (!this.tracking.running) await this.review.refresh();
    } catch (err) {
      this.showError(err);
    }
  }

  showFrameFlags(status) {
    const key = String(this.frame);
    const flags = [];
    if (status.prompted[key]) flags.push("prompted");
    else if (status.masked[key]) flags.push("tracked");
    if (status.stale.includes(this.frame)) flags.push("stale: track again");
    $("frame-flags").textContent = flags.join(" · ");
  }

  async refreshMetrics() {
    if (!this.video) return;
    const id = this.video.id;
    try {
      const metrics = await api("GET", videoPath(id, "metrics"));
      if (this.video.id !== id) return; // another video was opened meanwhile
      renderMetrics($("metrics"), metrics, new Map(this.video.objects.map((o) => [o.id, o.name])));
    } catch (err) {
      this.showError(err);
    }
  }

  // ---- frames ---------------------------------------------------------------------------

  async setFrame(idx) {
    if (!this.video) return;
    this.frame = this.timeline.clampFrame(idx);
    this.timeline.setFrame(this.frame);
    if (this.timeline.status) this.showFrameFlags(this.timeline.status);
    this.review.onFrame(this.frame);
    this.writeHash();
    await this.redraw();
    this.schedulePrepare();
  }

  /**
   * Draw the current frame with its mask and prompts. Frame, mask and prompts are drawn
   * together and only by the latest call, so a slow answer never paints over a newer one
   * (the frame JPEG comes from the browser cache after the first time).
   */
  async redraw() {
    const seq = ++this.frameSeq;
    const vid = this.video.id;
    const idx = this.frame;
    try {
      const [image, mask, prompts] = await Promise.all([
        loadImage(videoPath(vid, "frames", idx)),
        fetchBlob(videoPath(vid, "masks", idx)),
        api("GET", `${videoPath(vid, "prompts")}?frame=${idx}`),
      ]);
      if (seq !== this.frameSeq) return;
      this.view.showFrame(image);
      await this.view.showMask(mask);
      this.view.setPrompts(prompts.prompts, this.objectMap, this.activeObject);
      $("empty-hint").hidden = true;
      $("stage").dataset.frame = String(idx); // lets tests (and curious users) see what is drawn
    } catch (err) {
      if (seq === this.frameSeq) this.showError(err);
    }
  }

  prepareFrame() {
    if (!this.video || this.tracking.running) return;
    api("POST", videoPath(this.video.id, "frames", this.frame, "prepare")).catch((e) => this.showError(e));
  }

  writeHash() {
    if (!this.video) return;
    const params = new URLSearchParams({ video: this.video.id, frame: this.frame });
    if (this.activeObject !== null) params.set("object", this.activeObject);
    history.replaceState(null, "", `#${params}`);
  }

  // ---- mutations ------------------------------------------------------------------------

  /** Run fn after the mutations already queued; errors go to the status line. An edit
   *  made on a video that is no longer open when its turn comes (made while another one
   *  was opening) is dropped, and the status line says so. */
  mutate(fn) {
    const video = this.video && this.video.id;
    const run = async () => {
      if ((this.video && this.video.id) !== video) {
        this.setStatus("An edit made while another video opened was not saved: make it again.", "error");
        return undefined;
      }
      this.pending += 1;
      document.body.classList.add("saving");
      try {
        return await fn();
      } catch (err) {
        this.showError(err);
        // Our picture of the video may be out of date (another tab, a 409): re-read it.
        this.scheduleRefresh();
        return undefined;
      } finally {
        this.pending -= 1;
        if (!this.pending) document.body.classList.remove("saving");
      }
    };
    this.queue = this.queue.then(run);
    return this.queue;
  }

  /** Show a PromptResult: its frame, its mask, then re-read the rest. */
  async applyResult(result) {
    if (result.frame !== this.frame) {
      await this.setFrame(result.frame);
    } else {
      ++this.frameSeq;
      const blob = await fetchBlob(result.mask_png);
      await this.view.showMask(blob);
    }
    this.scheduleRefresh();
  }

  selectObject(id) {
    if (!this.objectMap || !this.objectMap.has(id) || id === this.activeObject) return;
    this.activeObject = id;
    // Marked in place, not rebuilt: the list item being clicked (its name field, which
    // selects on focus) must keep the focus so the name can be edited.
    markActiveObject($("object-list"), id);
    this.view.setPrompts(this.view.prompts, this.objectMap, this.activeObject);
    this.writeHash();
    this.setStatus(`Active: ${this.objectName(id)}.`);
  }

  /** Object `id`'s name; "object N" once this page no longer knows it (another tab deleted
   *  it while an edit of it was on its way). */
  objectName(id) {
    const obj = this.objectMap && this.objectMap.get(id);
    return obj ? obj.name : `object ${id}`;
  }

  selectObjectAt(index) {
    const obj = this.video && this.video.objects[index];
    if (obj) this.selectObject(obj.id);
  }

  bindControls() {
    $("prev-frame").addEventListener("click", () => this.setFrame(this.frame - 1));
    $("next-frame").addEventListener("click", () => this.setFrame(this.frame + 1));
  }

  /** The tracking job shown (null: none yet). */
  get job() {
    return this.tracking.job;
  }
}

const app = new App();
window.masklet = app; // for debugging from the console (and the browser tests)
app.start();
