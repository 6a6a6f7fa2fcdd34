// The browser side of a live session on WS /stream (docs/stream.md; the messages are those of
// emotion_client.stream_messages). No DOM here: the webcam tab in app.js draws what this file hands it.

export const SUBPROTOCOL = "emotion-stream";
export const KEY_PREFIX = "key."; // browsers cannot set headers: the API key travels as a subprotocol beside ours
const FRAME_TIME_MAGIC = [0x45, 0x4d, 0x54, 0x31]; // "EMT1", then the capture time: float64, little-endian
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/; // RFC 7230 token: all a subprotocol may be made of
export const MAX_OUTSTANDING = 2; // frames sent and not answered yet: one being analysed, one waiting behind it
const CLOSE_WAIT_MS = 5000; // after {"type": "close"}, how long the final summary may take before we hang up

/** What each close code means (docs/stream.md), for when the server gives no reason of its own. */
export const CLOSE_REASONS = {
  1001: "the session ended: idle too long, open too long, or the service is stopping",
  1007: "the service refused the session's options",
  1008: "missing or invalid API key",
  1009: "a frame was larger than the service accepts",
  1011: "the service failed while analysing the stream",
  1013: "too many live sessions are open; try again later",
};

/** ws:// or wss:// to this page's own host, as the page was loaded over http:// or https://. */
export function streamUrl(location) {
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/stream`;
}

/** Where the API key goes: a `key.<key>` subprotocol when it is made of token characters, else the options. */
export function keyPlacement(key) {
  if (!key) return { protocols: [SUBPROTOCOL], apiKey: null };
  if (TOKEN.test(KEY_PREFIX + key)) return { protocols: [SUBPROTOCOL, KEY_PREFIX + key], apiKey: null };
  return { protocols: [SUBPROTOCOL], apiKey: key };
}

/** A frame message: "EMT1", the capture time in seconds (float64 LE), then the encoded image (an ArrayBuffer or
 * a typed array; bytes rather than a Blob, so that developer tools show what was sent). */
export function packFrame(image, t) {
  const bytes = image instanceof ArrayBuffer ? new Uint8Array(image) : image;
  const message = new Uint8Array(12 + bytes.byteLength);
  message.set(FRAME_TIME_MAGIC);
  new DataView(message.buffer).setFloat64(4, t, true);
  message.set(bytes, 12);
  return message;
}

/** One session: options first, frames while fewer than MAX_OUTSTANDING are unanswered, `close` for the summary.
 * `on` gets the server's messages by type (ready, result, summary, error) and `closed(code, reason, session)`. */
export class StreamSession {
  constructor(url, { key = "", options = {}, on = {} } = {}) {
    const { protocols, apiKey } = keyPlacement(key);
    this.on = on;
    this.sent = 0; // frame messages sent
    this.answered = 0; // frames the server is done with: analysed, dropped or refused (results carry their seq)
    this.ready = null; // the server's `ready` message
    this.heard = false; // any message from the server yet
    this.closing = false;
    this.ws = new WebSocket(url, protocols);
    this.ws.addEventListener("open", () => {
      const message = { type: "options", ...options };
      if (apiKey) message.api_key = apiKey;
      this.ws.send(JSON.stringify(message));
    });
    this.ws.addEventListener("message", (event) => this.receive(event.data));
    this.ws.addEventListener("close", (event) => {
      clearTimeout(this.hangUp);
      if (this.on.closed) this.on.closed(event.code, event.reason, this);
    });
  }

  get outstanding() {
    return this.sent - this.answered;
  }

  canSend() {
    const open = this.ws.readyState === WebSocket.OPEN && this.ready !== null && !this.closing;
    return open && this.outstanding < MAX_OUTSTANDING;
  }

  send(image, t) {
    this.ws.send(packFrame(image, t));
    this.sent += 1;
  }

  receive(data) {
    if (typeof data !== "string") return; // the server sends text only
    const message = JSON.parse(data);
    this.heard = true;
    if (message.type === "ready") this.ready = message;
    // a result or an error for frame `seq` means every frame up to it was answered or dropped (newest wins)
    if (Number.isInteger(message.seq)) this.answered = Math.max(this.answered, message.seq + 1);
    const handler = this.on[message.type];
    if (handler) handler(message, this);
  }

  /** Ask for the final summary and end the session (the server closes with 1000 after sending it). */
  close() {
    if (this.closing) return;
    this.closing = true;
    if (this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ type: "close" }));
      this.hangUp = setTimeout(() => this.ws.close(1000), CLOSE_WAIT_MS);
    } else {
      this.ws.close(1000);
    }
  }

  /** End at once, no summary wanted (the page is going away). */
  abort() {
    this.closing = true;
    this.ws.close(1000);
  }
}
