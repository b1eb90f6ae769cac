// A video's event stream from the server: its changes (from any tab), tracking progress,
// review marks and the shared label set. EventSource reconnects by itself; "hello" opens
// every stream.

import { videoPath } from "./api.js";

/** Listen to video `id`'s events for `app`, closing the stream of the video before it.
 *  app.events is the EventSource; app.disconnected says the stream dropped and has not
 *  said hello again. */
export function connectEvents(app, id) {
  if (app.events) app.events.close();
  const es = new EventSource(videoPath(id, "events"));
  app.events = es;
  const parse = (e) => JSON.parse(e.data);
  es.addEventListener("hello", (e) => {
    if (app.disconnected) app.setStatus("Connected to the server again.");
    app.disconnected = false;
    app.tracking.update(parse(e).job);
    app.scheduleRefresh();
  });
  es.addEventListener("changed", () => app.scheduleRefresh());
  // The label set changed (in this page or another): reload it, and the video, whose
  // objects lose a deleted label.
  es.addEventListener("labels", () => {
    app.labels.refresh().catch((err) => app.showError(err));
    app.scheduleRefresh();
  });
  es.addEventListener("progress", (e) => onProgress(app, parse(e).job));
  // Frames marked reviewed (in this page or another).
  es.addEventListener("reviewed", (e) => app.review.onReviewed(parse(e)));
  es.onerror = () => {
    if (es.readyState === EventSource.CLOSED) return;
    app.disconnected = true;
    app.setStatus("Lost the server connection; retrying…", "error");
  };
}

/** A tracked frame was written: show the job, redraw if it is the frame on screen. */
function onProgress(app, job) {
  app.tracking.update(job);
  if (job.frame === app.frame && job.state === "running") app.redraw();
  app.scheduleTimeline();
}
