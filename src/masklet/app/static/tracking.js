// The track bar: start and cancel tracking, and show the job's live progress (the job
// comes from POST /track, from the events stream and from the video detail).

import { api, videoPath } from "./api.js";

const $ = (id) => document.getElementById(id);

const VERBS = { running: "tracking", done: "done", cancelled: "cancelled", failed: "failed", interrupted: "interrupted" };

/** "tracking 12/61 (frame 31)", "tracking 12/61 (frame 31) · motion" */
export function jobText(job) {
  const where = job.frame !== null && job.frame !== undefined ? ` (frame ${job.frame})` : "";
  const motion = job.motion ? " · motion" : "";
  return `${VERBS[job.state] || job.state} ${job.done}/${job.total}${where}${motion}`;
}

export class TrackControl {
  /** app: the App of app.js (video, mutate, setStatus, showError, scheduleRefresh). */
  constructor(app) {
    this.app = app;
    this.job = null;
    $("track-btn").addEventListener("click", () => this.start());
    $("cancel-btn").addEventListener("click", () => this.cancel());
  }

  get running() {
    return Boolean(this.job && this.job.state === "running");
  }

  start() {
    const app = this.app;
    if (!app.video || app.video.kind === "images") return;
    const direction = $("track-direction").value;
    const motion = $("track-motion").checked;
    // Replaces an old error, so the progress lines that follow are shown ("info", not
    // "busy": a job that ends before its reply arrives announces nothing more).
    app.setStatus("Starting tracking…");
    app.mutate(async () => {
      this.update(await api("POST", videoPath(app.video.id, "track"), { direction, motion }));
    });
  }

  cancel() {
    if (!this.running) return;
    api("POST", videoPath(this.app.video.id, "track", "cancel"))
      .then((job) => this.update(job))
      .catch((err) => this.app.showError(err));
  }

  /** Show a job (null: none yet); announce the end of the one that was running. */
  update(job) {
    const was = this.job;
    // A job never runs again once it ended: a late answer (the POST /track reply arriving
    // after the final progress event) must not bring back a finished job's "running".
    if (job && was && was.id === job.id && was.state !== "running" && job.state === "running") return;
    this.job = job;
    const video = this.app.video;
    const running = this.running;
    document.body.classList.toggle("tracking", running);
    $("track-btn").disabled = running || !video || video.kind === "images";
    $("cancel-btn").disabled = !running;
    const bar = $("track-progress");
    bar.max = job && job.total ? job.total : 1;
    bar.value = job ? job.done : 0;
    $("track-label").textContent = job ? jobText(job) : "";
    if (!job) return;
    if (running) this.app.setProgress(`Tracking: ${job.done} / ${job.total} frames…`);
    else if (was && was.id === job.id && was.state === "running") this.finished(job);
  }

  finished(job) {
    const app = this.app;
    if (job.state === "done") app.setStatus(`Tracked ${job.done} frames. Scrub to check; correct any frame and track again.`);
    else if (job.state === "cancelled") app.setStatus(`Tracking cancelled after ${job.done} frames (kept).`);
    else if (job.state === "interrupted") app.setStatus(`Tracking interrupted (the server stopped) after ${job.done} frames; they are kept: press Track to resume.`, "error");
    else app.setStatus(`Tracking ${job.state}: ${job.error || "see the server log"}`, "error");
    app.scheduleRefresh();
  }

  /** A sentence for the "opened" status when the last job did not finish. */
  resumeHint() {
    const job = this.job;
    if (!job || (job.state !== "interrupted" && job.state !== "cancelled")) return "";
    return ` The last tracking stopped (${job.state}) after ${job.done}/${job.total} frames: press Track to resume.`;
  }
}
