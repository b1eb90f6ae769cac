// The status line: one message at a time, with a kind (info, busy, error) the page styles.
// An error stays until the user dismisses it (its ×) or a later action replaces it.

const $ = (id) => document.getElementById(id);

export class StatusLine {
  /** app: the App of app.js (video, and tracking for its running job). */
  constructor(app) {
    this.app = app;
    $("status-dismiss").addEventListener("click", () => this.dismiss());
  }

  /** Show a line; an error shown with it stays until the user dismisses it or acts again. */
  show(text, kind = "info") {
    const out = $("status");
    out.textContent = text;
    out.title = text; // the whole message, also when a narrow window must wrap it
    out.dataset.kind = kind;
    $("status-dismiss").hidden = kind !== "error";
  }

  /**
   * A progress line (tracking here or in another tab): it never replaces an error, or a
   * refused click would vanish with the next progress event, before anyone could read it.
   */
  progress(text) {
    if ($("status").dataset.kind === "error") return;
    this.show(text, "busy");
  }

  error(err) {
    console.error(err);
    this.show(`Error: ${this.errorText(err)}`, "error");
  }

  /** The server's whole message; a refusal because of tracking says what to do about it. */
  errorText(err) {
    if (err.status === 409 && (this.app.tracking.running || /track/i.test(err.message))) {
      return `not saved: this video is being tracked (in this tab or another one) and ` +
        `cannot be edited until tracking ends. Wait for it or press Cancel, then try ` +
        `again (server: ${err.message}).`;
    }
    return err.message;
  }

  /** The × of the status line: put the error away (the progress comes back if tracking). */
  dismiss() {
    const { tracking, video } = this.app;
    const job = tracking.job;
    if (tracking.running) this.show(`Tracking: ${job.done} / ${job.total} frames…`, "busy");
    else this.show(video ? `“${video.name}” open.` : "Ready.");
  }
}
