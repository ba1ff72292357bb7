/*
 * proctor.js — the Proctor embed client. One script tag, no dependencies, no build.
 *
 *   const session = await Proctor.start({
 *     server, sessionId, token, preview,
 *     onFlag(flag) {}, onWarning(w) {}, onStatus(s) {}, onState(state, detail) {},
 *   });
 *   await session.end();
 *
 * It asks for camera and microphone, sends them to the Proctor server over WebRTC,
 * receives flags, warnings and status on the DataChannel "proctor", reports tab
 * visibility, window focus, fullscreen exit, paste and copy to POST /events, and
 * reconnects on its own when the network drops.
 *
 * Two helpers share the same connection code:
 *   Proctor.openMedia()  the camera and microphone with the constraints the server
 *                        expects (a page's camera check can pass it on as `stream`);
 *   Proctor.watch({...}) the proctor dashboard's connection (DataChannel "alerts"), and
 *                        with `video` the live picture and sound of one candidate.
 */
(() => {
  "use strict";

  /**
   * The origin this script was loaded from: the default server. document.currentScript
   * is only set while the script first runs, so it is read now.
   */
  const SCRIPT_ORIGIN = (() => {
    try {
      return new URL(document.currentScript.src).origin;
    } catch {
      return window.location.origin;
    }
  })();

  const MEDIA_CONSTRAINTS = {
    video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 15 } },
    // The server must hear the room as it is: processing would hide a second voice
    // or a whisper, and change the levels the audio checks rely on.
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  };
  /** The server (aiortc) does not trickle ICE: the offer waits for its candidates. */
  const ICE_GATHER_LIMIT_MS = 3000;
  const RETRY_FIRST_MS = 1000;
  const RETRY_MAX_MS = 10000;
  const RETRY_GIVE_UP_MS = 120000;
  const EVENT_RETRY_MS = 2000;
  const EVENTS_PER_POST = 100; // the server's limit
  /**
   * Answers that another try cannot change: bad offer, bad or expired token, no such
   * session, session already ended.
   */
  const FINAL_HTTP = new Set([400, 401, 403, 404, 409]);

  /** An error from the server (`status` is the HTTP status) or from the media devices. */
  class ProctorError extends Error {
    /**
     * @param {string} message plain words, fit to show
     * @param {number} status HTTP status; 0 when no server answer is involved
     * @param {string} code the server's error code, or "media", "options", "network"
     */
    constructor(message, status, code) {
      super(message);
      this.name = "ProctorError";
      this.status = status;
      this.code = code;
    }

    /** True when retrying cannot help. */
    get final() {
      return FINAL_HTTP.has(this.status);
    }
  }

  /** Calls an integrator's callback; a bug in it must not break the connection. */
  function notify(callback, ...args) {
    if (typeof callback !== "function") return;
    try {
      callback(...args);
    } catch (error) {
      console.error("Proctor: a callback threw", error);
    }
  }

  /**
   * A JSON request with the Bearer token. Server errors are `{error: {code, message}}`;
   * they reject with a ProctorError carrying the server's message.
   * @returns {Promise<any>}
   */
  async function fetchJson(url, token, init = {}) {
    let response;
    try {
      response = await fetch(url, {
        ...init,
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      });
    } catch (error) {
      throw new ProctorError(`The server could not be reached (${error.message}).`, 0, "network");
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = body.error || {};
      const refused = new ProctorError(error.message || `HTTP ${response.status}`,
                                       response.status, error.code || "http");
      // A full server (503 at_capacity) says when to come back.
      const retryAfter = Number(response.headers.get("Retry-After"));
      if (retryAfter > 0) refused.retryAfterMs = retryAfter * 1000;
      throw refused;
    }
    return body;
  }

  /** Plain words for a getUserMedia failure the candidate can act on. */
  async function mediaErrorReason(error) {
    switch (error && error.name) {
      case "NotAllowedError":
      case "SecurityError":
        return "Camera or microphone access was denied. Please allow both in your " +
               "browser's site settings and try again.";
      case "NotFoundError": {
        const kinds = await navigator.mediaDevices.enumerateDevices()
          .then((devices) => new Set(devices.map((d) => d.kind)), () => new Set());
        if (!kinds.has("videoinput")) return "No camera was found. Please connect one and try again.";
        if (!kinds.has("audioinput")) {
          return "No microphone was found. Please connect one and try again.";
        }
        return "The camera or microphone could not be found. Please check both and try again.";
      }
      case "NotReadableError":
      case "AbortError":
        return "The camera or microphone is busy: another application may be using it. " +
               "Please close that application and try again.";
      default:
        return `The camera and microphone could not be started (${error && error.message || error}).`;
    }
  }

  /**
   * Opens the camera and microphone with the constraints the server expects.
   * @returns {Promise<MediaStream>} rejects with a ProctorError (code "media") in plain words
   */
  async function openMedia() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new ProctorError("This page cannot use the camera: it must be opened over https.",
                             0, "media");
    }
    try {
      return await navigator.mediaDevices.getUserMedia(MEDIA_CONSTRAINTS);
    } catch (error) {
      throw new ProctorError(await mediaErrorReason(error), 0, "media");
    }
  }

  /** Resolves when ICE gathering is complete, or after ICE_GATHER_LIMIT_MS at most. */
  function iceGatheringDone(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ICE_GATHER_LIMIT_MS);
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  }

  /**
   * One logical connection to the server that survives network drops: each attempt is
   * a new RTCPeerConnection and a new offer, retried with backoff (1, 2, 4 … 10 s) for
   * up to two minutes. Used by the candidate session and by the proctor dashboard.
   *
   * States reported to onState: "connecting", "live", "reconnecting", "failed".
   */
  class PeerLink {
    /**
     * @param {object} o
     * @param {string} o.rtcConfigUrl GET → {ice_servers: [{urls, username?, credential?}]}
     * @param {string} o.offerUrl POST {sdp, type: "offer", ...o.offerFields} → answer
     * @param {string} o.token Bearer token
     * @param {string} o.label the DataChannel this client opens
     * @param {MediaStream} [o.stream] tracks to send (none: a DataChannel-only offer)
     * @param {object} [o.offerFields] extra fields for the offer's body, read at each
     *   attempt (the owner may change them between attempts)
     * @param {() => string[]} [o.receive] media kinds to offer as recvonly, per attempt
     * @param {(track: MediaStreamTrack, pc: RTCPeerConnection) => void} [o.onTrack]
     *   each track the server sends
     * @param {(message: object) => void} o.onMessage each JSON message from the server
     * @param {(state: string, detail: object) => void} o.onState
     */
    constructor(o) {
      this.o = o;
      this.state = "new";
      this.pc = null;
      /** The extra fields of the current peer's offer. */
      this.offered = {};
      this._channel = null;
      this._closed = false;
      this._retryTimer = null;
      this._retryDelay = RETRY_FIRST_MS;
      this._lostSince = null;
    }

    /**
     * The first attempt. Resolves once it is answered or a retry is scheduled;
     * rejects (state "failed") when the server refuses for good.
     */
    async open() {
      this._setState("connecting");
      try {
        await this._attempt();
      } catch (error) {
        if (error instanceof ProctorError && error.final) {
          this.fail(error.message, error.code);
          throw error;
        }
        this._lost(error);
      }
    }

    /** Sends a JSON message on the DataChannel; false when it is not open. */
    send(message) {
      const channel = this._channel;
      if (!channel || channel.readyState !== "open") return false;
      channel.send(JSON.stringify(message));
      return true;
    }

    /**
     * Replaces the peer now with a new offer (made from the current offerFields);
     * a failure is retried like a lost link.
     */
    async renew() {
      if (this._closed) return;
      clearTimeout(this._retryTimer);
      this._retryTimer = null;
      try {
        await this._attempt();
      } catch (failure) {
        if (failure instanceof ProctorError && failure.final) this.fail(failure.message, failure.code);
        else this._lost(failure);
      }
    }

    /** Stops for good: no more retries, the peer connection is closed. */
    close() {
      this._closed = true;
      clearTimeout(this._retryTimer);
      if (this.pc) this.pc.close();
      this.pc = null;
    }

    /** Gives up: "failed", with the reason and, when the server refused, its error code. */
    fail(reason, code = "") {
      this.close();
      this._setState("failed", { reason, code });
    }

    _setState(state, detail = {}) {
      if (this.state === state) return;
      this.state = state;
      this.o.onState(state, detail);
    }

    async _attempt() {
      const { ice_servers: iceServers = [] } = await fetchJson(this.o.rtcConfigUrl, this.o.token);
      if (this._closed) return;
      if (this.pc) this.pc.close(); // the dead one, if any: the server replaces it
      const pc = new RTCPeerConnection({ iceServers });
      this.pc = pc;
      const fields = { ...this.o.offerFields };
      this.offered = fields;
      try {
        const stream = this.o.stream;
        if (stream) {
          for (const track of stream.getTracks()) {
            pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
          }
        }
        for (const kind of this.o.receive ? this.o.receive() : []) {
          pc.addTransceiver(kind, { direction: "recvonly" });
        }
        if (this.o.onTrack) {
          pc.addEventListener("track", (event) => {
            if (pc === this.pc) this.o.onTrack(event.track, pc);
          });
        }
        // Created before the offer, so the offer carries the SCTP section for it.
        const channel = pc.createDataChannel(this.o.label);
        this._channel = channel;
        channel.addEventListener("open", () => this._live(pc));
        channel.addEventListener("message", (event) => this._onMessage(event.data));
        // The server closing the channel (or the whole peer) is a lost link too: a new
        // offer finds out whether to carry on or that the session has ended.
        channel.addEventListener("close", () => {
          if (pc === this.pc) this._lost();
        });
        pc.addEventListener("connectionstatechange", () => this._onConnectionState(pc));

        await pc.setLocalDescription(await pc.createOffer());
        await iceGatheringDone(pc);
        const answer = await fetchJson(this.o.offerUrl, this.o.token, {
          method: "POST",
          body: JSON.stringify({ ...fields, sdp: pc.localDescription.sdp, type: "offer" }),
        });
        if (pc !== this.pc) return; // closed or replaced meanwhile
        await pc.setRemoteDescription(answer);
      } catch (error) {
        pc.close();
        if (this.pc === pc) this.pc = null;
        throw error;
      }
    }

    _onMessage(raw) {
      let message;
      try {
        message = JSON.parse(raw);
      } catch {
        return; // the protocol is JSON text; anything else is not for us
      }
      if (message && typeof message === "object") this.o.onMessage(message);
    }

    _onConnectionState(pc) {
      if (pc !== this.pc || this._closed) return;
      const state = pc.connectionState;
      if (state === "connected") this._live(pc);
      else if (state === "disconnected" || state === "failed") this._lost();
    }

    _live(pc) {
      if (pc !== this.pc || this._closed) return;
      // A "disconnected" link that recovers on its own needs no new offer.
      clearTimeout(this._retryTimer);
      this._retryTimer = null;
      this._retryDelay = RETRY_FIRST_MS;
      this._lostSince = null;
      this._setState("live");
    }

    /** The link is down: schedule the next attempt, or give up after two minutes. A full
     * server (503 with Retry-After) is waited for as long as it takes, at its pace. */
    _lost(error = null) {
      if (this._closed || this._retryTimer) return;
      const waitMs = error instanceof ProctorError ? error.retryAfterMs : undefined;
      this._lostSince = waitMs ? null : this._lostSince ?? Date.now();
      if (this._lostSince !== null && Date.now() - this._lostSince > RETRY_GIVE_UP_MS) {
        this.fail("The connection to the proctoring server was lost. Please check your " +
                  "network and reload the page.");
        return;
      }
      if (waitMs) this.state = null; // each wait for a full server is announced, with why
      this._setState("reconnecting", waitMs ? { reason: error.message, code: error.code,
                                               retry_in_seconds: waitMs / 1000 } : {});
      this._retryTimer = setTimeout(async () => {
        this._retryTimer = null;
        try {
          await this._attempt();
        } catch (failure) {
          if (failure instanceof ProctorError && failure.final) {
            this.fail(failure.message, failure.code);
          } else {
            this._lost(failure);
          }
        }
      }, waitMs ?? this._retryDelay);
      if (!waitMs) this._retryDelay = Math.min(this._retryDelay * 2, RETRY_MAX_MS);
    }
  }

  /**
   * @typedef {object} Flag
   * @property {string} flag_id
   * @property {string} kind e.g. "face_absent"
   * @property {"low"|"moderate"|"high"} severity only rises while the flag is open
   * @property {number} start media seconds from the session's start
   * @property {number|null} end null while the flag is open
   * @property {{clip_id?: string, metrics?: object}} evidence
   */

  /**
   * @typedef {object} StartOptions
   * @property {string} [server] default: the origin this script was loaded from
   * @property {string} sessionId from POST /sessions, via the integrator's backend
   * @property {string} token the candidate token
   * @property {HTMLVideoElement} [preview] self-view element
   * @property {MediaStream} [stream] an already open stream from Proctor.openMedia()
   *   (a page's camera check); the session owns it from now on and stops it at the end
   * @property {(flag: Flag) => void} [onFlag] a flag opened, rose in severity or closed
   * @property {(w: {kind: string, message: string}) => void} [onWarning] plain words
   * @property {(s: {risk: number, faces: number|null}) => void} [onStatus] about 1/s
   * @property {(state: string, detail: {reason?: string}) => void} [onState]
   *   connecting | live | reconnecting | ended | failed
   */

  /** A candidate's proctored session: media out, flags and warnings in, telemetry. */
  class ProctorSession {
    /** @param {StartOptions} options */
    constructor(options) {
      this.server = (options.server || SCRIPT_ORIGIN).replace(/\/$/, "");
      this.sessionId = options.sessionId;
      this.token = options.token;
      this.options = options;
      /** @type {string} connecting | live | reconnecting | ended | failed */
      this.state = "new";
      /** @type {MediaStream|null} */
      this.stream = options.stream || null;
      this.link = null;
      this._ended = false;
      this._events = [];
      this._eventsInFlight = null;
      this._eventRetry = null;
      this._listeners = [];
    }

    _api(path) {
      return `${this.server}/api/v1/sessions/${encodeURIComponent(this.sessionId)}${path}`;
    }

    _setState(state, detail = {}) {
      if (this.state === state) return;
      this.state = state;
      notify(this.options.onState, state, detail);
    }

    /** @returns {Promise<ProctorSession>} */
    async start() {
      this._setState("connecting");
      if (!this.stream) {
        try {
          this.stream = await openMedia();
        } catch (error) {
          this._setState("failed", { reason: error.message });
          throw error;
        }
      }
      const preview = this.options.preview;
      if (preview) {
        preview.muted = true; // never play the candidate's own microphone back
        preview.srcObject = this.stream;
        preview.play().catch(() => {}); // autoplay may wait for a gesture; harmless
      }
      this._watchPage();
      this.link = new PeerLink({
        rtcConfigUrl: this._api("/rtc-config"),
        offerUrl: this._api("/offer"),
        token: this.token,
        label: "proctor",
        stream: this.stream,
        onMessage: (message) => this._onMessage(message),
        onState: (state, detail) => {
          if (this._ended) return;
          // Ended by the integrator (or at its expiry) while the link was down.
          if (detail.code === "session_ended" && this.state !== "connecting") {
            this._finish();
            return;
          }
          if (state === "failed") this._teardown();
          this._setState(state, detail);
        },
      });
      await this.link.open();
      return this;
    }

    _onMessage(message) {
      const o = this.options;
      if (message.type === "flag") notify(o.onFlag, message.flag);
      else if (message.type === "warning") notify(o.onWarning, message);
      else if (message.type === "status") notify(o.onStatus, message);
      else if (message.type === "session" && message.status === "ended") this._finish();
    }

    // Browser telemetry -----------------------------------------------------------

    _watchPage() {
      const on = (target, name, handler) => {
        target.addEventListener(name, handler);
        this._listeners.push([target, name, handler]);
      };
      on(document, "visibilitychange", () =>
        this._report(document.visibilityState === "hidden" ? "tab_hidden" : "tab_visible"));
      on(window, "blur", () => this._report("window_blur"));
      on(window, "focus", () => this._report("window_focus"));
      on(document, "fullscreenchange", () => {
        if (!document.fullscreenElement) this._report("fullscreen_exit");
      });
      on(document, "paste", () => this._report("paste"));
      on(document, "copy", () => this._report("copy"));
    }

    _report(type) {
      if (this._ended) return;
      this._events.push({ type, time: Date.now() });
      this._sendEvents();
    }

    /**
     * Posts what is queued, one batch at a time. Events stay queued until the server
     * has them: a failed POST puts its batch back and tries again after
     * EVENT_RETRY_MS. keepalive lets the last POST finish while the page unloads.
     * @returns {Promise<void>|null} the POST in flight, if any
     */
    _sendEvents() {
      if (this._eventsInFlight || this._eventRetry || !this._events.length) {
        return this._eventsInFlight;
      }
      const batch = this._events.splice(0, EVENTS_PER_POST);
      this._eventsInFlight = fetchJson(this._api("/events"), this.token, {
        method: "POST",
        keepalive: true,
        // sent_at with each event's time lets the server place the events on the
        // media clock without trusting the browser's clock.
        body: JSON.stringify({ events: batch, sent_at: Date.now() }),
      }).then(() => {}, (error) => {
        if (error instanceof ProctorError && error.final) return; // refused for good
        this._events.unshift(...batch);
        this._eventRetry = setTimeout(() => {
          this._eventRetry = null;
          this._sendEvents();
        }, EVENT_RETRY_MS);
      }).finally(() => {
        this._eventsInFlight = null;
        this._sendEvents();
      });
      return this._eventsInFlight;
    }

    // Ending ----------------------------------------------------------------------

    /**
     * Ends the session: posts the last events and POST /end, stops the camera and
     * microphone, closes the connection. The state is "ended" even if the POST fails
     * (the promise then rejects with the reason).
     */
    async end() {
      if (this._ended) return;
      try {
        clearTimeout(this._eventRetry); // one last try now rather than later
        this._eventRetry = null;
        await this._eventsInFlight;
        await this._sendEvents();
        await fetchJson(this._api("/end"), this.token, { method: "POST", body: "{}" });
      } finally {
        this._finish();
      }
    }

    _finish() {
      if (this._ended) return;
      this._teardown();
      this._setState("ended");
    }

    _teardown() {
      this._ended = true;
      clearTimeout(this._eventRetry);
      for (const [target, name, handler] of this._listeners) {
        target.removeEventListener(name, handler);
      }
      this._listeners = [];
      if (this.link) this.link.close();
      if (this.stream) this.stream.getTracks().forEach((track) => track.stop());
    }
  }

  /**
   * @typedef {object} WatchOptions
   * @property {string} [server] default: the origin this script was loaded from
   * @property {string} token a proctor token
   * @property {string[]} [sessions] default: every session the token covers
   * @property {string} [video] a session whose live picture and sound to receive
   *   (switch later with `show(id)`)
   * @property {(message: object) => void} onMessage each message of the "alerts"
   *   channel: {type: "flag"|"session"|"status"|"break"|"clip"|"watch", session_id, ...}
   * @property {(stream: MediaStream, sessionId: string) => void} [onVideo] a new stream
   *   of the live picture (and sound): each new peer brings one
   * @property {(state: string, detail: {reason?: string}) => void} [onState]
   */

  /**
   * The proctor's live connection: a DataChannel "alerts" and, with `video`, the live
   * picture of one candidate (recvonly video and audio).
   *
   * `show(id)` switches the picture: a `{"type": "watch", "video": id}` message on the
   * same peer when it carries a picture, else (or when the server answers that the
   * media is on another node, "elsewhere", or that this peer has none, "no_video") a
   * new offer with `video: id`, which the server routes to the node holding the media.
   * @param {WatchOptions} options
   * @returns {Promise<{readonly state: string, readonly video: string|null,
   *   show(sessionId: string): void, close(): void}>}
   */
  async function watch(options) {
    const server = (options.server || SCRIPT_ORIGIN).replace(/\/$/, "");
    const fields = options.sessions && options.sessions.length ? { sessions: options.sessions }
                                                              : {};
    if (options.video) fields.video = options.video;
    let stream = null; // the current peer's tracks, made into one stream
    let streamPc = null;
    const link = new PeerLink({
      rtcConfigUrl: `${server}/api/v1/rtc-config`,
      offerUrl: `${server}/api/v1/watch/offer`,
      token: options.token,
      label: "alerts",
      offerFields: fields,
      receive: () => (fields.video ? ["video", "audio"] : []),
      onTrack: (track, pc) => {
        if (streamPc !== pc) {
          stream = new MediaStream();
          streamPc = pc;
        }
        stream.addTrack(track);
        notify(options.onVideo, stream, link.offered.video);
      },
      onMessage: (message) => {
        if (message.type === "watch") onWatchReply(message);
        notify(options.onMessage, message);
      },
      onState: (state, detail) => notify(options.onState, state, detail),
    });

    /** A new peer for the picture, unless this one was already offered for it. */
    function renewFor(sessionId) {
      if (link.offered.video !== sessionId) link.renew();
    }

    function onWatchReply(message) {
      if (message.video !== fields.video) return; // an answer to an older switch
      if (message.status === "elsewhere" || message.status === "no_video") {
        renewFor(message.video);
      }
    }

    await link.open();
    return {
      get state() { return link.state; },
      get video() { return fields.video || null; },
      show(sessionId) {
        fields.video = sessionId;
        // The current peer relays a picture: switch it; the answer may ask for a new one.
        if (!(link.offered.video && link.send({ type: "watch", video: sessionId }))) {
          renewFor(sessionId);
        }
      },
      close: () => link.close(),
    };
  }

  window.Proctor = {
    /**
     * Starts proctoring. Resolves with the session once the first connection attempt
     * is answered (or, after a network error, a retry is scheduled); rejects when the
     * camera or microphone cannot be used or the server refuses for good.
     * @param {StartOptions} options
     * @returns {Promise<ProctorSession>}
     */
    start(options) {
      if (!options || !options.sessionId || !options.token) {
        return Promise.reject(new ProctorError("sessionId and token are required", 0, "options"));
      }
      return new ProctorSession(options).start();
    },
    openMedia,
    watch,
    ProctorError,
  };
})();
