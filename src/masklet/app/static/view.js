// The frame view: three stacked canvases at the frame's own resolution.
//   #frame-canvas  the decoded frame
//   #mask-canvas   the masks (semi-transparent fill, opaque outline, per-object colour)
//   #prompt-canvas clicks and boxes; it takes the pointer events
// Coordinates handed to callbacks are pixels of the original frame.

const FILL_ALPHA = 120; // of 255: the frame stays readable under the mask
const DRAG_THRESHOLD_PX = 5; // screen pixels; shorter drags are clicks

export class FrameView {
  constructor({ stage, onPoint, onBox }) {
    this.stage = stage;
    this.frameCanvas = stage.querySelector("#frame-canvas");
    this.maskCanvas = stage.querySelector("#mask-canvas");
    this.promptCanvas = stage.querySelector("#prompt-canvas");
    this.onPoint = onPoint;
    this.onBox = onBox;
    this.width = 0;
    this.height = 0;
    this.prompts = [];
    this.objects = new Map();
    this.activeObject = null;
    this.drag = null;
    // A painting tool (brush.js) that takes the pointer instead of clicks and boxes:
    // {down, move, up, cancel, leave, overlay}; null: clicks and boxes.
    this.tool = null;
    this.listen();
    new ResizeObserver(() => this.fit()).observe(stage.parentElement);
  }

  /** Resize the canvases to a frame of w x h (no-op when unchanged). */
  setSize(w, h) {
    if (w === this.width && h === this.height) return;
    this.width = w;
    this.height = h;
    for (const c of [this.frameCanvas, this.maskCanvas, this.promptCanvas]) {
      c.width = w;
      c.height = h;
    }
    this.fit();
  }

  /** Scale the stage to the available space, keeping the frame's aspect ratio. */
  fit() {
    if (!this.width) return;
    const box = this.stage.parentElement.getBoundingClientRect();
    const scale = Math.min(box.width / this.width, box.height / this.height);
    if (!(scale > 0)) return;
    this.stage.style.width = `${Math.floor(this.width * scale)}px`;
    this.stage.style.height = `${Math.floor(this.height * scale)}px`;
    this.drawPrompts();
  }

  clear() {
    for (const c of [this.frameCanvas, this.maskCanvas, this.promptCanvas]) {
      c.getContext("2d").clearRect(0, 0, c.width, c.height);
    }
  }

  showFrame(image) {
    this.setSize(image.naturalWidth, image.naturalHeight);
    this.frameCanvas.getContext("2d").drawImage(image, 0, 0);
  }

  clearMask() {
    this.maskCanvas.getContext("2d").clearRect(0, 0, this.width, this.height);
  }

  /** Draw a palette mask PNG (index 0 transparent) as fill + outline. */
  async showMask(blob) {
    const bitmap = await createImageBitmap(blob, {
      premultiplyAlpha: "none",
      colorSpaceConversion: "none",
    });
    const scratch = new OffscreenCanvas(this.width, this.height);
    const sctx = scratch.getContext("2d", { willReadFrequently: true });
    sctx.drawImage(bitmap, 0, 0, this.width, this.height);
    bitmap.close();
    const src = sctx.getImageData(0, 0, this.width, this.height);
    const out = new ImageData(this.width, this.height);
    outlineMask(src.data, out.data, this.width, this.height);
    this.maskCanvas.getContext("2d").putImageData(out, 0, 0);
  }

  /** prompts: API Prompt objects of this frame; objects: Map id -> Object. */
  setPrompts(prompts, objects, activeObject) {
    this.prompts = prompts;
    this.objects = objects;
    this.activeObject = activeObject;
    this.drawPrompts();
  }

  /** Frame pixels per screen pixel, so markers keep their on-screen size. */
  pixelScale() {
    const rect = this.promptCanvas.getBoundingClientRect();
    return rect.width > 0 ? this.width / rect.width : 1;
  }

  drawPrompts() {
    const ctx = this.promptCanvas.getContext("2d");
    ctx.clearRect(0, 0, this.width, this.height);
    const s = this.pixelScale();
    for (const p of this.prompts) {
      const obj = this.objects.get(p.object);
      const colour = obj ? obj.color : "#ffffff";
      const dim = this.activeObject !== null && p.object !== this.activeObject;
      ctx.globalAlpha = dim ? 0.55 : 1;
      if (p.box) drawBox(ctx, p.box, colour, s, false);
      (p.points || []).forEach((pt, i) => drawPoint(ctx, pt, p.labels[i], s));
    }
    ctx.globalAlpha = 1;
    if (this.tool) this.tool.overlay(ctx, s);
    if (this.drag && this.drag.moved) {
      const { x0, y0, x1, y1 } = this.drag;
      const obj = this.objects.get(this.activeObject);
      drawBox(ctx, [x0, y0, x1, y1], obj ? obj.color : "#ffffff", s, true);
    }
  }

  toFrame(event) {
    const rect = this.promptCanvas.getBoundingClientRect();
    const x = ((event.clientX - rect.left) * this.width) / rect.width;
    const y = ((event.clientY - rect.top) * this.height) / rect.height;
    return [clamp(x, 0, this.width - 1), clamp(y, 0, this.height - 1)];
  }

  cancelDrag() {
    this.drag = null;
    this.drawPrompts();
  }

  listen() {
    const c = this.promptCanvas;
    c.addEventListener("contextmenu", (e) => e.preventDefault());
    c.addEventListener("pointerdown", (e) => {
      if (!this.width || (e.button !== 0 && e.button !== 2)) return;
      if (this.tool) {
        // A painting tool (brush.js) owns the pointer: no clicks, no boxes meanwhile.
        if (this.tool.down(e, this.toFrame(e))) c.setPointerCapture(e.pointerId);
        return;
      }
      const [x, y] = this.toFrame(e);
      const negative = e.button === 2 || e.shiftKey;
      this.drag = { x0: x, y0: y, x1: x, y1: y, sx: e.clientX, sy: e.clientY, negative, moved: false };
      c.setPointerCapture(e.pointerId);
    });
    c.addEventListener("pointermove", (e) => {
      if (this.tool) {
        this.tool.move(e, this.toFrame(e));
        return;
      }
      if (!this.drag) return;
      [this.drag.x1, this.drag.y1] = this.toFrame(e);
      const far = Math.hypot(e.clientX - this.drag.sx, e.clientY - this.drag.sy) > DRAG_THRESHOLD_PX;
      this.drag.moved = this.drag.moved || far;
      if (this.drag.moved) this.drawPrompts();
    });
    c.addEventListener("pointerup", (e) => {
      if (this.tool) {
        this.tool.up(e, this.toFrame(e));
        return;
      }
      const drag = this.drag;
      if (!drag) return;
      this.drag = null;
      [drag.x1, drag.y1] = this.toFrame(e);
      if (drag.moved && !drag.negative) {
        const box = [
          Math.min(drag.x0, drag.x1), Math.min(drag.y0, drag.y1),
          Math.max(drag.x0, drag.x1), Math.max(drag.y0, drag.y1),
        ];
        this.drawPrompts();
        this.onBox(box);
      } else {
        this.drawPrompts();
        this.onPoint(drag.x0, drag.y0, drag.negative ? 0 : 1);
      }
    });
    c.addEventListener("pointercancel", () => {
      if (this.tool) this.tool.cancel();
      this.cancelDrag();
    });
    c.addEventListener("pointerleave", () => {
      if (this.tool) this.tool.leave();
    });
  }
}

function clamp(v, lo, hi) {
  return Math.min(hi, Math.max(lo, v));
}

/**
 * src: RGBA of the decoded palette PNG (alpha 0 = background). Writes into dst a
 * translucent fill and an opaque 1-pixel outline where the object id changes.
 */
function outlineMask(src, dst, w, h) {
  const same = (a, b) =>
    src[a + 3] === src[b + 3] && src[a] === src[b] && src[a + 1] === src[b + 1] && src[a + 2] === src[b + 2];
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 4;
      if (src[i + 3] === 0) continue;
      const edge =
        x === 0 || y === 0 || x === w - 1 || y === h - 1 ||
        !same(i, i - 4) || !same(i, i + 4) || !same(i, i - 4 * w) || !same(i, i + 4 * w);
      dst[i] = src[i];
      dst[i + 1] = src[i + 1];
      dst[i + 2] = src[i + 2];
      dst[i + 3] = edge ? 255 : FILL_ALPHA;
    }
  }
}

function drawPoint(ctx, [x, y], label, s) {
  const r = 6 * s;
  ctx.beginPath();
  ctx.arc(x, y, r, 0, 2 * Math.PI);
  ctx.fillStyle = label === 1 ? "#22c55e" : "#ef4444";
  ctx.fill();
  ctx.lineWidth = 2 * s;
  ctx.strokeStyle = "#ffffff";
  ctx.stroke();
  // A sign inside the dot, so the two kinds differ for colour-blind users too.
  ctx.beginPath();
  ctx.moveTo(x - r / 2, y);
  ctx.lineTo(x + r / 2, y);
  if (label === 1) {
    ctx.moveTo(x, y - r / 2);
    ctx.lineTo(x, y + r / 2);
  }
  ctx.lineWidth = 1.5 * s;
  ctx.stroke();
}

function drawBox(ctx, [x0, y0, x1, y1], colour, s, dashed) {
  ctx.setLineDash(dashed ? [6 * s, 4 * s] : []);
  ctx.lineWidth = 2 * s;
  ctx.strokeStyle = "#ffffff";
  ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  ctx.lineWidth = 1.2 * s;
  ctx.strokeStyle = colour;
  ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  ctx.setLineDash([]);
}
