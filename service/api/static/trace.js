// The webcam tab's live trace: each track's smoothed valence (top) and arousal (bottom) over the last seconds,
// drawn on a canvas, one colour per track. The canvas's data-points/data-tracks say what it holds (for tests).

const TRACK_COLORS = ["#0091ff", "#e5484d", "#30a46c", "#f5a524", "#8e4ec6", "#d6409f", "#12a594", "#ad7f58"];

/** A fixed colour per track id. */
export function trackColor(id) {
  return TRACK_COLORS[Math.abs(id) % TRACK_COLORS.length];
}

export class Trace {
  constructor(canvas, windowS = 20) {
    this.canvas = canvas;
    this.windowS = windowS;
    this.tracks = new Map(); // track_id -> [{t, valence, arousal}]
    this.now = 0;
  }

  clear() {
    this.tracks.clear();
    this.now = 0;
    this.draw();
  }

  /** A result's faces at its time `t`; points older than the window are dropped. */
  add(t, faces) {
    this.now = Math.max(this.now, t);
    for (const face of faces) {
      if (face.valence === null || face.valence === undefined) continue; // a model without valence/arousal
      if (!this.tracks.has(face.track_id)) this.tracks.set(face.track_id, []);
      this.tracks.get(face.track_id).push({ t, valence: face.valence, arousal: face.arousal });
    }
    for (const [id, points] of this.tracks) {
      while (points.length && points[0].t < this.now - this.windowS) points.shift();
      if (!points.length) this.tracks.delete(id);
    }
  }

  get points() {
    let n = 0;
    for (const points of this.tracks.values()) n += points.length;
    return n;
  }

  draw() {
    const { canvas } = this;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 480;
    const height = canvas.clientHeight || 176;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const style = getComputedStyle(canvas);
    ctx.font = `11px ${style.fontFamily}`;
    const plot = { left: 74, right: width - 8, height: (height - 16) / 2 };
    this.panel(ctx, style, plot, "valence", 0);
    this.panel(ctx, style, plot, "arousal", plot.height);
    ctx.fillStyle = style.color;
    ctx.textBaseline = "bottom";
    ctx.textAlign = "left";
    ctx.fillText(`−${this.windowS} s`, plot.left, height - 1);
    ctx.textAlign = "right";
    ctx.fillText("now", plot.right, height - 1);
    canvas.dataset.points = String(this.points);
    canvas.dataset.tracks = String(this.tracks.size);
  }

  /** One plot of `key` (-1..1 against the last windowS seconds) for every track, from `top` down. */
  panel(ctx, style, plot, key, top) {
    const x = (t) => plot.left + (1 - (this.now - t) / this.windowS) * (plot.right - plot.left);
    const y = (v) => top + 6 + ((1 - v) / 2) * (plot.height - 12);
    ctx.strokeStyle = style.getPropertyValue("--grid").trim() || "#8884";
    ctx.lineWidth = 1;
    ctx.fillStyle = style.color;
    ctx.textBaseline = "middle";
    ctx.beginPath();
    for (const v of [-1, 0, 1]) {
      ctx.moveTo(plot.left, y(v));
      ctx.lineTo(plot.right, y(v));
      ctx.textAlign = "right";
      ctx.fillText(v > 0 ? "+1" : v < 0 ? "−1" : "0", plot.left - 4, y(v));
    }
    ctx.stroke();
    ctx.textAlign = "left";
    ctx.fillText(key, 4, y(0));
    ctx.lineWidth = 2;
    for (const [id, points] of this.tracks) {
      ctx.strokeStyle = trackColor(id);
      ctx.beginPath();
      points.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p[key])) : ctx.moveTo(x(p.t), y(p[key]))));
      if (points.length === 1) ctx.arc(x(points[0].t), y(points[0][key]), 1.5, 0, 2 * Math.PI);
      ctx.stroke();
    }
  }
}
