// The timeline: a range scrubber, a frame-number field and a strip that marks, per frame,
// where masks exist, where the user prompted and which tracked masks are stale.

export class Timeline {
  constructor({ slider, number, count, strip, onSeek }) {
    this.slider = slider;
    this.number = number;
    this.count = count;
    this.strip = strip;
    this.onSeek = onSeek;
    this.numFrames = 0;
    this.status = null;
    slider.addEventListener("input", () => onSeek(Number(slider.value)));
    number.addEventListener("change", () => {
      const idx = Math.round(Number(number.value));
      if (Number.isFinite(idx)) onSeek(this.clampFrame(idx));
    });
    strip.addEventListener("pointerdown", (e) => {
      if (!this.numFrames) return;
      const rect = strip.getBoundingClientRect();
      onSeek(this.clampFrame(Math.floor(((e.clientX - rect.left) / rect.width) * this.numFrames)));
    });
    new ResizeObserver(() => this.drawStrip()).observe(strip);
  }

  clampFrame(idx) {
    return Math.min(Math.max(idx, 0), Math.max(this.numFrames - 1, 0));
  }

  /** A video of `numFrames` frames: the marks of the previous one go until its status comes. */
  setLength(numFrames) {
    this.numFrames = numFrames;
    this.status = null;
    this.slider.max = String(Math.max(numFrames - 1, 0));
    this.number.max = String(Math.max(numFrames - 1, 0));
    this.count.textContent = String(numFrames);
    this.slider.disabled = numFrames <= 1;
    this.number.disabled = numFrames === 0;
    this.drawStrip();
  }

  setFrame(idx) {
    this.slider.value = String(idx);
    if (document.activeElement !== this.number) this.number.value = String(idx);
    this.drawStrip();
  }

  /** status: GET /timeline body; colours: Map object id -> "#rrggbb". */
  setStatus(status, colours) {
    this.status = status;
    this.colours = colours;
    this.drawStrip();
  }

  isStale(idx) {
    return Boolean(this.status && this.status.stale.includes(idx));
  }

  drawStrip() {
    const c = this.strip;
    const w = Math.max(1, Math.round(c.clientWidth * devicePixelRatio));
    const h = Math.max(1, Math.round(c.clientHeight * devicePixelRatio));
    if (c.width !== w) c.width = w;
    if (c.height !== h) c.height = h;
    const ctx = c.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    if (!this.numFrames) return;
    const fw = w / this.numFrames;
    const band = (frames, y0, y1, colourOf) => {
      for (const [key, ids] of Object.entries(frames || {})) {
        ctx.fillStyle = colourOf(ids);
        ctx.fillRect(Math.floor(Number(key) * fw), y0, Math.max(1, Math.ceil(fw)), y1 - y0);
      }
    };
    const firstColour = (ids) => (this.colours && this.colours.get(ids[0])) || "#888888";
    if (this.status) {
      band(this.status.masked, h * 0.35, h, firstColour);
      const stale = Object.fromEntries(this.status.stale.map((f) => [f, [0]]));
      band(stale, h * 0.35, h * 0.55, () => "#f59e0b");
      band(this.status.prompted, 0, h * 0.3, () => "#f8fafc");
    }
    const cur = Number(this.slider.value);
    // The current frame: an outline of its cell (at least 3 px wide when frames are thin).
    const cell = Math.max(fw, 3);
    ctx.strokeStyle = "#38bdf8";
    ctx.lineWidth = 2;
    ctx.strokeRect(cur * fw + (fw - cell) / 2 + 1, 1, cell - 2, h - 2);
  }
}
