// Demo page of the facial-expression service. Plain modern JS, no dependencies: it talks only to this
// service's public API (GET /models, POST /predict/image, POST /predict/video, WS /stream) as any client would.

import { CLOSE_REASONS, StreamSession, streamUrl } from "./stream.js";
import { Trace, trackColor } from "./trace.js";

const $ = (selector) => document.querySelector(selector);
const SVG_NS = "http://www.w3.org/2000/svg";
const FRAME_MS = 200; // webcam without the stream: one frame at most every 200 ms, never two requests at once
const LIVE_GAP_MS = 66; // webcam on the stream: at most ~15 frames a second, however fast the answers come

const els = {
  model: $("#model"),
  apiKey: $("#api-key"),
  error: $("#error"),
  errorTitle: $("#error-title"),
  errorDetail: $("#error-detail"),
  photoInput: $("#photo-input"),
  photoBusy: $("#photo-busy"),
  photoResult: $("#photo-result"),
  photoImg: $("#photo-img"),
  photoCaption: $("#photo-caption"),
  videoInput: $("#video-input"),
  videoBusy: $("#video-busy"),
  videoBusyText: $("#video-busy-text"),
  videoResult: $("#video-result"),
  videoPreview: $("#video-preview"),
  videoUnplayable: $("#video-unplayable"),
  videoStats: $("#video-stats"),
  videoLegend: $("#video-legend"),
  tracks: $("#tracks"),
  sampleFps: $("#sample-fps"),
  smoothing: $("#smoothing"),
  camStart: $("#cam-start"),
  camStop: $("#cam-stop"),
  camStatus: $("#cam-status"),
  camVideo: $("#cam-video"),
  camPlaceholder: $("#cam-placeholder"),
  camSmoothing: $("#cam-smoothing"),
  camFps: $("#cam-fps"),
  camAnswered: $("#cam-answered"),
  camSkipped: $("#cam-skipped"),
  camServerMs: $("#cam-server-ms"),
  camTrace: $("#cam-trace"),
  camTraceLegend: $("#cam-trace-legend"),
  camSummary: $("#cam-summary"),
  camSummaryFrames: $("#cam-summary-frames"),
  camSummaryTracks: $("#cam-summary-tracks"),
};
const view = (name) => ({
  frame: $(`#${name}-frame`),
  boxes: $(`#${name}-boxes`),
  list: $(`#${name}-faces`),
  count: $(`#${name}-count`),
});
const photoView = view("photo");
const camView = view("cam");

// ---- small helpers ------------------------------------------------------------------------------------------

/** Create an element: h("li", {className: "x", dataset: {face: 1}}, child, "text"). */
function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  const { dataset, style, ...rest } = props;
  Object.assign(node, rest);
  Object.assign(node.dataset, dataset || {});
  for (const [name, value] of Object.entries(style || {})) node.style.setProperty(name, value);
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

/** Create an SVG element with attributes. */
function s(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

const pct = (p) => `${Math.round(p * 100)}%`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

const COLORS = {
  angry: "#e5484d", disgust: "#46a758", fear: "#8e4ec6", happy: "#f5a524",
  sad: "#3e63dd", surprise: "#e93d82", neutral: "#8b8d98", contempt: "#12a594",
};
const SPARE_COLORS = ["#0091ff", "#ad7f58", "#30a46c", "#d6409f", "#978365", "#7c66dc"];
const assigned = new Map();

/** A fixed colour per label (models with other labels get spare colours in order of appearance). */
function colorOf(label) {
  if (COLORS[label]) return COLORS[label];
  if (!assigned.has(label)) assigned.set(label, SPARE_COLORS[assigned.size % SPARE_COLORS.length]);
  return assigned.get(label);
}

/** Dark or white text, whichever reads better on the colour. */
function textOn(hex) {
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255);
  return 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.55 ? "#17171c" : "#ffffff";
}

const colorStyle = (label) => ({ "--c": colorOf(label), "--on-c": textOn(colorOf(label)) });
const trackStyle = (id) => ({ "--c": trackColor(id), "--on-c": textOn(trackColor(id)) });

// ---- the API ------------------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, detail, retryAfter = null) {
    super(detail);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/** The service's {"detail": ...} as one sentence (request validation gives a list of field errors). */
function describeDetail(body) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((e) => {
        const where = (e.loc || []).filter((part) => part !== "body" && part !== "query").join(".");
        return where ? `${where}: ${e.msg}` : e.msg;
      })
      .join("; ");
  }
  return null;
}

/** fetch() against this service with the API key and model options; throws ApiError with the API's detail. */
async function api(path, { params = {}, ...init } = {}) {
  const url = new URL(path, window.location.href);
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const headers = new Headers(init.headers);
  const key = els.apiKey.value.trim();
  if (key) headers.set("X-API-Key", key);
  let response;
  try {
    response = await fetch(url, { ...init, headers });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "the service could not be reached; is it still running?");
  }
  const json = (response.headers.get("content-type") || "").includes("json");
  const body = json ? await response.json().catch(() => null) : null;
  if (!response.ok) {
    const detail = describeDetail(body) || response.statusText || "the request failed";
    throw new ApiError(response.status, detail, response.headers.get("Retry-After"));
  }
  return body;
}

/** The selected model as query parameters (none: the service's default). */
function modelParams() {
  const option = els.model.selectedOptions[0];
  return option && option.value ? { model: option.dataset.name, version: option.dataset.version } : {};
}

// ---- errors -------------------------------------------------------------------------------------------------

const HINTS = {
  0: "",
  401: "Enter the service's API key above.",
  503: "The service is busy or the model is not ready yet; try again in a moment.",
  1008: "Enter the service's API key above, then start the webcam again.",
  1013: "Wait a moment, then start the webcam again.",
};

/** The live stream closed with a code other than 1000: its reason (the server's own, else the code's meaning). */
class StreamClosed extends ApiError {
  constructor(code, reason) {
    super(code, reason || CLOSE_REASONS[code] || "the live stream closed unexpectedly");
    this.title = `Live stream closed (${code}):`;
  }
}

function showError(err) {
  if (err && err.name === "AbortError") return;
  const status = err instanceof ApiError ? err.status : 0;
  els.errorTitle.textContent = err.title || (status ? `Error ${status}:` : "Error:");
  els.errorDetail.textContent = [err.message, HINTS[status]].filter(Boolean).join(" ");
  els.error.dataset.status = String(status);
  els.error.hidden = false;
}

function clearError() {
  els.error.hidden = true;
}

$("#error-close").addEventListener("click", clearError);

// ---- models and API key -------------------------------------------------------------------------------------

function modelLabel(m) {
  const notes = [
    m.default && "default",
    m.task === "clip-classification" && "video only",
    m.state === "failed" && "failed to load",
  ];
  return [`${m.name} ${m.version}`, ...notes.filter(Boolean)].join(" · ");
}

async function loadModels() {
  let list;
  try {
    list = await api("/models");
  } catch (err) {
    showError(err);
    return;
  }
  const previous = els.model.value;
  const options = list.models.map((m) => {
    const option = new Option(modelLabel(m), `${m.name}@${m.version}`, false, m.default);
    Object.assign(option.dataset, { name: m.name, version: m.version, task: m.task });
    return option;
  });
  els.model.replaceChildren(...options);
  if (options.some((o) => o.value === previous)) els.model.value = previous;
  if (els.error.dataset.status === "401") clearError();
}

els.apiKey.value = sessionStorage.getItem("emotion-api-key") || "";
els.apiKey.addEventListener("change", () => {
  sessionStorage.setItem("emotion-api-key", els.apiKey.value.trim());
  loadModels();
});
els.model.addEventListener("change", () => {
  if (lastPhoto && !$("#panel-photo").hidden) analysePhoto(lastPhoto);
});

// ---- tabs ---------------------------------------------------------------------------------------------------

const tabs = [...document.querySelectorAll('[role="tab"]')];

function selectTab(tab, focus = false) {
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute("aria-selected", String(on));
    t.tabIndex = on ? 0 : -1;
    document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
  }
  if (focus) tab.focus();
  if (tab.id !== "tab-webcam") stopCam(); // the camera never runs out of sight
}

for (const tab of tabs) {
  tab.addEventListener("click", () => selectTab(tab));
  tab.addEventListener("keydown", (event) => {
    const i = tabs.indexOf(tab);
    const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[event.key];
    if (next === undefined) return;
    event.preventDefault();
    selectTab(tabs[(next + tabs.length) % tabs.length], true);
  });
}

// ---- faces: boxes over the picture and one card per face ----------------------------------------------------

/** A face's box; `tag` and `style` replace the "1 · happy 80%" tag and the label's colour (live tracks). */
function boxElement(face, i, width, height, { tag = null, style = null } = {}) {
  const clamp = (v) => Math.min(100, Math.max(0, v));
  const { x, y, width: w, height: hgt } = face.box;
  const box = h("div", { className: "box", dataset: { face: i }, style: style || colorStyle(face.dominant) });
  Object.assign(box.style, {
    left: `${clamp((100 * x) / width)}%`,
    top: `${clamp((100 * y) / height)}%`,
    width: `${clamp((100 * w) / width)}%`,
    height: `${clamp((100 * hgt) / height)}%`,
  });
  if (y / height < 0.12) box.classList.add("tag-inside"); // no room for the tag above the box
  if ((x + w) / width > 0.8) box.classList.add("tag-right"); // nor to its right
  const text = tag || `${i + 1} · ${face.dominant} ${pct(face.emotions[face.dominant])}`;
  box.append(h("span", { className: "tag" }, text));
  return box;
}

function barRow(label, p, top) {
  return h(
    "li",
    { className: top ? "bar-row top" : "bar-row", style: colorStyle(label) },
    h("span", { className: "name" }, label),
    h("span", { className: "bar", ariaHidden: "true" }, h("span", { style: { width: `${(p * 100).toFixed(1)}%` } })),
    h("span", { className: "value" }, pct(p)),
  );
}

/** Valence/arousal and the detector's score; a live track's score 0 is a box carried from the last detection. */
function affectLine(face, source, live = false) {
  const parts = [];
  if (face.valence !== null && face.valence !== undefined) {
    parts.push(`Valence ${face.valence.toFixed(2)}, arousal ${face.arousal.toFixed(2)} (${source})`);
  }
  if (face.score > 0) parts.push(`Detector score ${face.score.toFixed(2)}`);
  else if (face.score === 0 && live) parts.push("Followed from the last full detection");
  else if (face.score === 0) parts.push("No face detected: the whole image was read as one face");
  return parts.length ? h("p", { className: "affect" }, ...parts.map((part) => h("span", {}, part))) : null;
}

function faceCard(face, i, source, { title = `Face ${i + 1}`, style = null, live = false } = {}) {
  const card = h(
    "li",
    { className: "face", tabIndex: 0, dataset: { face: i }, style: style || colorStyle(face.dominant) },
    h(
      "div",
      { className: "face-head" },
      h("h3", {}, title),
      h("span", { className: "dominant" }, face.dominant),
      h("span", { className: "pct" }, pct(face.emotions[face.dominant])),
    ),
    h(
      "ul",
      { className: "bars", ariaLabel: `Probabilities for ${title}` },
      ...Object.entries(face.emotions).map(([label, p]) => barRow(label, p, label === face.dominant)),
    ),
    affectLine(face, source, live),
  );
  return card;
}

/** Highlight a face's box while its card is hovered or focused. */
function linkCards(view) {
  const toggle = (event, on) => {
    const card = event.target.closest(".face");
    if (!card) return;
    card.classList.toggle("active", on);
    const box = view.boxes.querySelector(`.box[data-face="${card.dataset.face}"]`);
    if (box) box.classList.toggle("active", on);
  };
  for (const [type, on] of [["mouseover", true], ["mouseout", false], ["focusin", true], ["focusout", false]]) {
    view.list.addEventListener(type, (event) => toggle(event, on));
  }
}
linkCards(photoView);
linkCards(camView);

function renderFaces(view, body) {
  const { width, height, faces } = body;
  view.frame.style.setProperty("--ar", String(width / height)); // the boxes are percentages of this frame
  view.boxes.replaceChildren(...faces.map((face, i) => boxElement(face, i, width, height)));
  view.list.replaceChildren(
    ...(faces.length
      ? faces.map((face, i) => faceCard(face, i, body.valence_arousal_source))
      : [h("li", { className: "empty" }, "No face found. Faces should be frontal and not too small.")]),
  );
  view.count.textContent = plural(faces.length, "face");
}

function describeFaces(faces) {
  if (!faces.length) return "no face found";
  return `${plural(faces.length, "face")}: ${faces.map((f, i) => `${i + 1} ${f.dominant}`).join(", ")}`;
}

// ---- photo --------------------------------------------------------------------------------------------------

let lastPhoto = null;
let photoUrl = null;
let photoRequest = null;

async function analysePhoto(file) {
  lastPhoto = file;
  clearError();
  if (photoRequest) photoRequest.abort();
  const request = (photoRequest = new AbortController());
  els.photoBusy.hidden = false;
  const form = new FormData();
  form.append("file", file, file.name || "pasted-image");
  try {
    const init = { method: "POST", body: form, params: modelParams(), signal: request.signal };
    const body = await api("/predict/image", init);
    await showPhoto(file, body);
  } catch (err) {
    if (err.name !== "AbortError") els.photoResult.hidden = true;
    showError(err);
  } finally {
    if (photoRequest === request) els.photoBusy.hidden = true;
  }
}

async function showPhoto(file, body) {
  if (photoUrl) URL.revokeObjectURL(photoUrl);
  photoUrl = URL.createObjectURL(file);
  els.photoImg.src = photoUrl;
  let shown = true;
  await els.photoImg.decode().catch(() => (shown = false));
  els.photoImg.alt = `Your photo, ${describeFaces(body.faces)}`;
  renderFaces(photoView, body);
  const notes = [`${body.width} × ${body.height} px`, `${body.model.name} ${body.model.version}`];
  if (!shown) notes.push("this browser cannot display the picture itself");
  els.photoCaption.textContent = notes.join(" · ");
  els.photoResult.classList.toggle("wide", body.width / body.height > 1.45 || body.faces.length > 2);
  els.photoResult.hidden = false;
}

// ---- video --------------------------------------------------------------------------------------------------

let videoRequest = null;
let videoUrl = null;

async function analyseVideo(file) {
  clearError();
  if (videoRequest) videoRequest.abort();
  const request = (videoRequest = new AbortController());
  const started = performance.now();
  const tick = () => {
    const seconds = Math.round((performance.now() - started) / 1000);
    els.videoBusyText.textContent = `Analysing ${file.name}… ${seconds} s`;
  };
  tick();
  const ticker = setInterval(tick, 1000);
  els.videoBusy.hidden = false;
  const form = new FormData();
  form.append("file", file, file.name || "clip");
  const params = { ...modelParams(), sample_fps: els.sampleFps.value, smoothing: els.smoothing.value };
  try {
    const body = await api("/predict/video", { method: "POST", body: form, params, signal: request.signal });
    showVideo(file, body, (performance.now() - started) / 1000);
  } catch (err) {
    if (err.name !== "AbortError") els.videoResult.hidden = true;
    showError(err);
  } finally {
    clearInterval(ticker);
    if (videoRequest === request) els.videoBusy.hidden = true;
  }
}

$("#video-cancel").addEventListener("click", () => videoRequest && videoRequest.abort());

/** Unreadable stretches of a video as "1.0–5.8 s, 9.0–10.0 s". */
function describeGaps(gaps) {
  return gaps.map((g) => `${g.start.toFixed(1)}–${g.end.toFixed(1)} s`).join(", ");
}

function showVideo(file, body, seconds) {
  if (videoUrl) URL.revokeObjectURL(videoUrl);
  videoUrl = URL.createObjectURL(file);
  els.videoUnplayable.hidden = true;
  els.videoPreview.hidden = false;
  els.videoPreview.src = videoUrl;
  const stats = [
    ["Duration", `${body.duration_s.toFixed(1)} s at ${Math.round(body.fps)} fps`],
    ["Frames analysed", `${body.frames_analyzed} (${body.sample_fps} per second)`],
    // damaged stretches the service read past: the timelines below leave them out
    ...(body.frames_unreadable
      ? [["Not analysed", `${body.frames_unreadable} unreadable frames at ${describeGaps(body.unreadable)}`]]
      : []),
    ["Faces tracked", String(body.tracks.length)],
    // tracks linked into persons in the service (a label within this answer; no identity, no matching across clips)
    ...(body.persons && body.persons.length ? [["People", String(body.persons.length)]] : []),
    ["Whole clip", body.summary ? `mostly ${body.summary.dominant}` : "no face"],
    ["Analysis time", `${seconds.toFixed(1)} s`],
    ["Model", `${body.model.name} ${body.model.version}`],
  ];
  els.videoStats.replaceChildren(...stats.flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));
  const labels = body.summary ? Object.keys(body.summary.emotions) : [];
  els.videoLegend.replaceChildren(
    ...labels.map((label) => h("li", {}, h("span", { className: "swatch", style: colorStyle(label) }), label)),
  );
  els.tracks.replaceChildren(
    ...(body.persons && body.persons.length ? [personsList(body.persons)] : []),
    ...(body.tracks.length
      ? body.tracks.map((track) => trackCard(track, body, labels))
      : [h("p", { className: "empty" }, "No face was found in the sampled frames.")]),
  );
  els.videoResult.hidden = false;
}

els.videoPreview.addEventListener("error", () => {
  if (!els.videoPreview.getAttribute("src")) return;
  els.videoPreview.hidden = true; // e.g. MPEG-4 Part 2 or AVI: the analysis is complete all the same
  els.videoUnplayable.hidden = false;
});

els.videoPreview.addEventListener("timeupdate", () => {
  for (const chart of els.tracks.querySelectorAll(".timeline")) chart.movePlayhead(els.videoPreview.currentTime);
});

function personsList(persons) {
  const items = persons.map((person) => {
    const share = person.summary.share[person.summary.dominant] || 0;
    const tracks = person.track_ids.length === 1 ? "track" : "tracks";
    const segments = person.segments.map((seg) =>
      h("li", {}, `${seg.start.toFixed(1)}–${seg.end.toFixed(1)} s: ${seg.dominant}`),
    );
    return h(
      "li",
      { className: "person", dataset: { person: person.person_id } },
      h("strong", {}, `Person ${person.person_id}`),
      ` · ${tracks} ${person.track_ids.join(", ")} · ${person.time_on_screen.toFixed(1)} s on screen · mostly ` +
        `${person.summary.dominant} (${pct(share)})`,
      h(
        "details",
        { className: "segments-list" },
        h("summary", {}, plural(person.segments.length, "segment")),
        h("ol", {}, ...segments),
      ),
    );
  });
  return h(
    "section",
    { className: "persons", ariaLabel: "People" },
    h("h3", {}, "People", h("small", {}, "tracks of the same face, numbered within this answer only")),
    h("ul", {}, ...items),
  );
}

function trackCard(track, body, labels) {
  const share = track.summary.share[track.summary.dominant] || 0;
  const span = `${track.first_seen.toFixed(1)}–${track.last_seen.toFixed(1)} s`;
  const titleId = `track-${track.track_id}-title`;
  const segments = track.segments.map((seg) =>
    h("li", {}, `${seg.start.toFixed(1)}–${seg.end.toFixed(1)} s: ${seg.dominant}`),
  );
  const person = track.person_id == null ? "" : ` · person ${track.person_id}`;
  const about = `${span}${person} · mostly ${track.summary.dominant} (${pct(share)})`;
  return h(
    "article",
    { className: "track", dataset: { track: track.track_id } },
    h("h3", {}, `Track ${track.track_id}`, h("small", {}, about)),
    timelineChart(track, body, labels, titleId),
    h(
      "details",
      { className: "segments-list" },
      h("summary", {}, plural(track.segments.length, "segment")),
      h("ol", {}, ...segments),
    ),
  );
}

// ---- the timeline chart (inline SVG) ------------------------------------------------------------------------

const CHART = { width: 960, left: 44, right: 14, top: 8, plot: 140, band: 14, bottom: 30 };

function niceStep(raw) {
  const steps = [0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600];
  return steps.find((step) => step >= raw) || 1200;
}

function formatSeconds(t, step) {
  if (t >= 60 && step >= 1) return `${Math.floor(t / 60)}:${String(Math.round(t % 60)).padStart(2, "0")}`;
  return `${step < 1 ? t.toFixed(step < 0.25 ? 1 : 2).replace(/0$/, "") : Math.round(t)} s`;
}

/** Consecutive timeline points, split where the face was not seen for more than a few samples. */
function runsOf(timeline, sampleFps) {
  const gap = 2.5 / sampleFps;
  const runs = [];
  for (const point of timeline) {
    const run = runs[runs.length - 1];
    if (run && point.t - run[run.length - 1].t <= gap) run.push(point);
    else runs.push([point]);
  }
  return runs;
}

/** A stacked area per label for one run: the probabilities over time sum to 1, so the stack fills the plot.
 * Each sample covers one sampling interval from its timestamp, as the segments below the plot do. */
function stackedAreas(run, labels, x, y, step) {
  const last = run[run.length - 1];
  const points = [...run, last];
  const xs = [...run.map((p) => x(p.t)), x(last.t + step)];
  const below = points.map(() => 0);
  return labels.map((label) => {
    const above = points.map((p, i) => below[i] + (p.emotions[label] || 0));
    const top = xs.map((px, i) => `${px.toFixed(1)},${y(above[i]).toFixed(1)}`);
    const bottom = xs.map((px, i) => `${px.toFixed(1)},${y(below[i]).toFixed(1)}`).reverse();
    above.forEach((v, i) => (below[i] = v));
    return s("polygon", { points: [...top, ...bottom].join(" "), fill: colorOf(label), "data-label": label });
  });
}

function axes(duration, x, y) {
  const { width, left, right, top, plot, band } = CHART;
  const nodes = [];
  for (const p of [0, 0.5, 1]) {
    nodes.push(s("line", { class: "grid", x1: left, x2: width - right, y1: y(p), y2: y(p) }));
    nodes.push(s("text", { class: "axis", x: left - 6, y: y(p) + 4, "text-anchor": "end" }, pct(p)));
  }
  const step = niceStep(duration / 8);
  const base = top + plot + band + 8;
  for (let t = 0; t <= duration + 1e-6; t += step) {
    nodes.push(s("line", { class: "grid", x1: x(t), x2: x(t), y1: base - 4, y2: base }));
    nodes.push(s("text", { class: "axis", x: x(t), y: base + 12, "text-anchor": "middle" }, formatSeconds(t, step)));
  }
  return nodes;
}

function timelineChart(track, body, labels, titleId) {
  const { width, left, right, top, plot, band, bottom } = CHART;
  const duration = Math.max(body.duration_s, track.last_seen, 0.1);
  const x = (t) => left + (Math.min(Math.max(t, 0), duration) / duration) * (width - left - right);
  const y = (p) => top + (1 - p) * plot;
  const height = top + plot + band + bottom + 12;
  const summary = `Track ${track.track_id}: probability of each expression over time, mostly ${track.summary.dominant}`;
  const chart = s("svg", {
    class: "timeline", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": titleId,
  });
  chart.append(s("title", { id: titleId }, summary));
  chart.append(...axes(duration, x, y));
  for (const run of runsOf(track.timeline, body.sample_fps)) {
    chart.append(s("g", { class: "areas" }, ...stackedAreas(run, labels, x, y, 1 / body.sample_fps)));
  }
  const bandY = top + plot + 4;
  for (const seg of track.segments) {
    const rect = s("rect", {
      class: "segment", x: x(seg.start), y: bandY, height: band - 4, rx: 2,
      width: Math.max(1, x(seg.end) - x(seg.start)), fill: colorOf(seg.dominant), "data-label": seg.dominant,
    });
    rect.append(s("title", {}, `${seg.start.toFixed(1)}–${seg.end.toFixed(1)} s: ${seg.dominant}`));
    chart.append(rect);
  }
  const playhead = s("line", {
    class: "playhead", y1: top, y2: bandY + band, x1: left, x2: left, visibility: "hidden",
  });
  chart.append(playhead);
  chart.movePlayhead = (t) => {
    playhead.setAttribute("x1", x(t));
    playhead.setAttribute("x2", x(t));
    playhead.setAttribute("visibility", "visible");
  };
  chart.addEventListener("click", (event) => {
    const rect = chart.getBoundingClientRect();
    const vx = ((event.clientX - rect.left) / rect.width) * width;
    const t = ((vx - left) / (width - left - right)) * duration;
    if (!els.videoPreview.hidden && t >= 0) els.videoPreview.currentTime = Math.min(t, duration);
  });
  return chart;
}

// ---- webcam: the camera -------------------------------------------------------------------------------------

const cam = { stream: null, canvas: document.createElement("canvas"), interval: null, live: null };
const trace = new Trace(els.camTrace);

async function startCam() {
  clearError();
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError(new Error("this page has no camera access: browsers allow the webcam only on https:// or localhost."));
    return;
  }
  els.camStart.disabled = true;
  try {
    cam.stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 }, facingMode: "user" },
      audio: false,
    });
  } catch (err) {
    els.camStart.disabled = false;
    showError(new Error(`the webcam could not be opened (${err.name}: ${err.message})`));
    return;
  }
  els.camVideo.srcObject = cam.stream;
  await els.camVideo.play();
  els.camPlaceholder.hidden = true;
  camView.frame.style.setProperty("--ar", String(els.camVideo.videoWidth / els.camVideo.videoHeight || 4 / 3));
  els.camStop.disabled = false;
  els.camSummary.hidden = true;
  els.camStatus.textContent = "Starting…";
  openLive(cam.stream);
}

/** Camera off; a live session asks for its final summary (shown below) and ends. */
function stopCam() {
  if (!cam.stream) return;
  for (const track of cam.stream.getTracks()) track.stop();
  cam.stream = null;
  cam.interval = null;
  if (cam.live) cam.live.session.close();
  els.camVideo.srcObject = null;
  els.camPlaceholder.hidden = false;
  camView.boxes.replaceChildren();
  els.camStart.disabled = false;
  els.camStop.disabled = true;
  els.camStatus.textContent = "Camera off.";
}

/** One JPEG of the current webcam frame, at most 640 px on its longest side. */
function grabFrame(quality = 0.85) {
  const video = els.camVideo;
  const scale = Math.min(1, 640 / Math.max(video.videoWidth, video.videoHeight, 1));
  cam.canvas.width = Math.max(1, Math.round(video.videoWidth * scale));
  cam.canvas.height = Math.max(1, Math.round(video.videoHeight * scale));
  cam.canvas.getContext("2d").drawImage(video, 0, 0, cam.canvas.width, cam.canvas.height);
  return new Promise((resolve, reject) =>
    cam.canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("no webcam frame"))), "image/jpeg", quality),
  );
}

// ---- webcam: the live session on WS /stream -----------------------------------------------------------------

function openLive(media) {
  const live = { media, started: performance.now(), answered: 0, skipped: 0, times: [], faces: -1, lastSent: 0 };
  cam.live = live;
  trace.clear();
  els.camTraceLegend.replaceChildren();
  showStats(live, null);
  const smoothing = Number.parseFloat(els.camSmoothing.value);
  const options = { ...modelParams(), ...(Number.isFinite(smoothing) ? { smoothing } : {}) };
  live.session = new StreamSession(streamUrl(window.location), {
    key: els.apiKey.value.trim(),
    options,
    on: {
      ready: (ready) => {
        if (cam.stream === media) els.camStatus.textContent = `Live · ${ready.model.name} ${ready.model.version}`;
        if (ready.valence_arousal_source === "none") {
          els.camTraceLegend.replaceChildren(h("li", {}, "This model gives no valence or arousal."));
        }
        pump(live);
      },
      result: (result) => showLiveResult(live, result),
      error: (error) => {
        showError(new Error(`frame ${error.seq ?? "?"} was not analysed: ${error.detail}`));
        pump(live);
      },
      summary: showSummary,
      closed: (code, reason, session) => liveClosed(live, code, reason, session),
    },
  });
}

/** Send the current frame while the session has room (one frame analysed, one waiting), ~15 per second at most. */
async function pump(live) {
  if (cam.live !== live || live.grabbing || !live.session.canSend()) return;
  clearTimeout(live.timer);
  const wait = live.lastSent + LIVE_GAP_MS - performance.now();
  if (wait > 0) {
    live.timer = setTimeout(() => pump(live), wait);
    return;
  }
  live.grabbing = true;
  try {
    const t = (performance.now() - live.started) / 1000; // the capture time: results and summary count from 0
    let frame = await grabFrame();
    if (frame.size + 12 > live.session.ready.max_frame_bytes) frame = await grabFrame(0.5);
    const bytes = await frame.arrayBuffer();
    if (cam.live !== live || !live.session.canSend()) return; // stopped meanwhile
    live.session.send(bytes, t);
    live.lastSent = performance.now();
  } catch (err) {
    showError(err);
    stopCam();
    return;
  } finally {
    live.grabbing = false;
  }
  pump(live);
}

function showLiveResult(live, result) {
  if (cam.live !== live) return; // a session ended before this one began
  live.answered += 1;
  live.skipped += result.skipped;
  const now = performance.now();
  live.times.push(now);
  while (live.times.length > 2 && now - live.times[0] > 3000) live.times.shift();
  showStats(live, result.server_ms);
  if (!cam.stream) return; // answers still on their way after Stop are counted, not drawn
  renderLiveFaces(result, live.session.ready.valence_arousal_source);
  trace.add(result.t, result.faces);
  trace.draw();
  traceLegend(result.faces, live.session.ready.valence_arousal_source);
  if (result.faces.length !== live.faces) {
    live.faces = result.faces.length; // the status line is read aloud: it changes only with the number of faces
    els.camStatus.textContent = `Live · ${plural(live.faces, "face")}`;
  }
  pump(live);
}

function showStats(live, serverMs) {
  const span = live.times.length > 1 ? live.times[live.times.length - 1] - live.times[0] : 0;
  els.camFps.textContent = span > 0 ? ((1000 * (live.times.length - 1)) / span).toFixed(1) : "–";
  els.camAnswered.textContent = String(live.answered);
  els.camSkipped.textContent = String(live.skipped);
  els.camServerMs.textContent = serverMs === null ? "–" : serverMs.toFixed(1);
}

/** Boxes tagged "#<track id> · <smoothed label>" and a card per face, in each track's own colour. */
function renderLiveFaces(result, source) {
  const { width, height, faces } = result;
  camView.frame.style.setProperty("--ar", String(width / height));
  const tag = (face) => `#${face.track_id} · ${face.dominant} ${pct(face.emotions[face.dominant])}`;
  camView.boxes.replaceChildren(
    ...faces.map((face, i) => boxElement(face, i, width, height, { tag: tag(face), style: trackStyle(face.track_id) })),
  );
  const card = (face, i) =>
    faceCard(face, i, source, { title: `Track #${face.track_id}`, style: trackStyle(face.track_id), live: true });
  camView.list.replaceChildren(
    ...(faces.length
      ? faces.map(card)
      : [h("li", { className: "empty" }, "No face in view. Faces should be frontal and not too small.")]),
  );
  camView.count.textContent = plural(faces.length, "face");
}

/** The trace's legend, with each visible track's latest values: the canvas's text alternative. */
function traceLegend(faces, source) {
  if (source === "none") return; // a model without valence/arousal: the legend keeps its note
  const latest = new Map(faces.map((face) => [face.track_id, face]));
  const items = [...trace.tracks.keys()].map((id) => {
    const face = latest.get(id);
    const values = face && face.valence != null ? ` valence ${face.valence.toFixed(2)}, arousal ` : null;
    return h(
      "li",
      { dataset: { track: id } },
      h("span", { className: "swatch", style: trackStyle(id) }),
      `#${id}`,
      values && `${values}${face.arousal.toFixed(2)}`,
    );
  });
  els.camTraceLegend.replaceChildren(...items);
}

/** The session closed. Never opened (an older service, a proxy that does not pass WebSockets): snapshots. */
function liveClosed(live, code, reason, session) {
  clearTimeout(live.timer);
  if (cam.live === live) cam.live = null;
  const running = cam.stream === live.media;
  if (!session.heard && !(code in CLOSE_REASONS)) {
    if (!running) return;
    els.camStatus.textContent = "The live stream is not available here; sending snapshots instead.";
    camLoop(live.media);
    return;
  }
  if (code !== 1000 || (running && !session.closing)) showError(new StreamClosed(code, reason));
  if (running) stopCam();
}

function showSummary(summary) {
  const { frames, tracks } = summary;
  const overall = summary.summary ? ` · mostly ${summary.summary.dominant} overall` : "";
  els.camSummaryFrames.textContent =
    `${frames.analysed} of ${frames.received} frames analysed, ${frames.dropped} dropped (a newer one came first), ` +
    `${frames.bad} unreadable${overall}`;
  els.camSummaryTracks.replaceChildren(
    ...(tracks.length ? tracks.map(summaryTrack) : [h("li", { className: "empty" }, "No face was tracked.")]),
  );
  els.camSummary.hidden = false;
}

function summaryTrack(track) {
  const { dominant, share } = track.summary;
  const span = `${track.first_seen.toFixed(1)}–${track.last_seen.toFixed(1)} s`;
  const segments = track.segments.map((seg) =>
    h("li", {}, `${seg.start.toFixed(1)}–${seg.end.toFixed(1)} s: ${seg.dominant}`),
  );
  return h(
    "li",
    { className: "summary-track", dataset: { track: track.track_id } },
    h("span", { className: "swatch", style: trackStyle(track.track_id) }),
    h("strong", {}, `#${track.track_id}`),
    ` · ${span} · ${plural(track.samples, "frame")} · mostly ${dominant} (${pct(share[dominant] || 0)})`,
    h(
      "details",
      { className: "segments-list" },
      h("summary", {}, plural(track.segments.length, "segment")),
      h("ol", {}, ...segments),
    ),
  );
}

// ---- webcam: snapshots to POST /predict/image where the stream cannot be opened -----------------------------

/** Send a frame, draw the answer, wait out the rest of FRAME_MS, repeat: never more than one request in flight. */
async function camLoop(stream) {
  let last = null;
  while (cam.stream === stream) {
    const started = performance.now();
    let wait = FRAME_MS;
    try {
      const frame = await grabFrame();
      const body = await api("/predict/image", {
        method: "POST", body: frame, headers: { "Content-Type": "image/jpeg" }, params: modelParams(),
      });
      if (cam.stream !== stream) break; // stopped while the frame was on its way
      renderFaces(camView, body);
      const ms = performance.now() - started;
      if (last !== null) {
        const gap = started - last; // frame-to-frame interval, smoothed for the status line
        cam.interval = cam.interval === null ? gap : 0.8 * cam.interval + 0.2 * gap;
      }
      last = started;
      const rate = cam.interval ? ` · ${(1000 / cam.interval).toFixed(1)} frames/s` : "";
      els.camStatus.textContent = `${plural(body.faces.length, "face")} · ${Math.round(ms)} ms per frame${rate}`;
    } catch (err) {
      if (cam.stream !== stream) break;
      if (err instanceof ApiError && err.status === 503) {
        wait = 1000 * (Number(err.retryAfter) || 1);
        els.camStatus.textContent = "The service is busy; retrying…";
      } else {
        showError(err);
        stopCam();
        break;
      }
    }
    await sleep(Math.max(0, wait - (performance.now() - started)));
  }
}

els.camStart.addEventListener("click", startCam);
els.camStop.addEventListener("click", stopCam);
// The camera never runs out of sight: a hidden or closed tab stops it and ends the session.
window.addEventListener("pagehide", stopCam);
document.addEventListener("visibilitychange", () => document.hidden && stopCam());

// ---- file inputs, drag and drop, paste ----------------------------------------------------------------------

const handlers = { photo: analysePhoto, video: analyseVideo };

for (const [input, kind] of [[els.photoInput, "photo"], [els.videoInput, "video"]]) {
  input.addEventListener("change", () => {
    const file = input.files && input.files[0];
    if (file) handlers[kind](file);
    input.value = ""; // choosing the same file again analyses it again
  });
}

for (const zone of document.querySelectorAll(".drop")) {
  const panel = zone.closest(".panel");
  const kind = zone.dataset.kind;
  panel.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  panel.addEventListener("dragleave", (event) => {
    if (!panel.contains(event.relatedTarget)) zone.classList.remove("over");
  });
  panel.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) handlers[kind](file);
  });
}
// A file dropped outside a drop zone must not replace the page.
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());

document.addEventListener("paste", (event) => {
  if ($("#panel-photo").hidden) return;
  const file = [...event.clipboardData.files].find((f) => f.type.startsWith("image/"));
  if (file) analysePhoto(file);
});

loadModels();
