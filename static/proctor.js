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
 */
(function (global) {
  "use strict";

  // The origin this script was loaded from: the default server.
  const SCRIPT_ORIGIN = (function () {
    try {
      return new URL(document.currentScript.src).origin;
    } catch (e) {
      return global.location ? global.location.origin : "";
    }
  })();

  const MEDIA_CONSTRAINTS = {
    video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 15 } },
    // The server must hear the room as it is: no processing that hides a second voice.
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  };
  const ICE_GATHER_LIMIT_MS = 3000;
  const RETRY_MAX_MS = 10000;
  const RETRY_GIVE_UP_MS = 120000;
  const FINAL_HTTP = new Set([400, 401, 403, 404, 409]);

  /** An error the candidate can act on, in plain words. */
  function mediaErrorReason(error) {
    switch (error && error.name) {
      case "NotAllowedError":
      case "SecurityError":
        return "Camera or microphone access was denied. Please allow both and try again.";
      case "NotFoundError":
      case "OverconstrainedError":
        return "No camera or no microphone was found. Please connect both and try again.";
      case "NotReadableError":
      case "AbortError":
        return "The camera or microphone is in use by another application. Please close it and try again.";
      default:
        return "The camera and microphone could not be started (" + (error && error.message || error) + ").";
    }
  }

  class ProctorError extends Error {
    constructor(message, status, code) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  class ProctorSession {
    constructor(options) {
      this.server = (options.server || SCRIPT_ORIGIN).replace(/\/$/, "");
      this.sessionId = options.sessionId;
      this.token = options.token;
      this.preview = options.preview || null;
      this.callbacks = options;
      this.state = "new";
      this.stream = null;
      this.pc = null;
      this.channel = null;
      this._events = [];
      this._sending = false;
      this._ended = false;
      this._retryDelay = 1000;
      this._disconnectedSince = null;
      this._listeners = [];
    }

    _api(path) {
      return this.server + "/api/v1/sessions/" + encodeURIComponent(this.sessionId) + path;
    }

    async _fetchJson(url, init) {
      const response = await fetch(url, Object.assign({}, init, {
        headers: Object.assign({ Authorization: "Bearer " + this.token,
                                 "Content-Type": "application/json" }, init && init.headers),
      }));
      const body = await response.json().catch(() => ({}));
      if (!response.ok) {
        const error = body.error || {};
        throw new ProctorError(error.message || ("HTTP " + response.status), response.status,
                               error.code);
      }
      return body;
    }

    _setState(state, detail) {
      if (this.state === state && !detail) return;
      this.state = state;
      if (this.callbacks.onState) this.callbacks.onState(state, detail || {});
    }

    async start() {
      this._setState("connecting");
      try {
        this.stream = await navigator.mediaDevices.getUserMedia(MEDIA_CONSTRAINTS);
      } catch (error) {
        const reason = mediaErrorReason(error);
        this._setState("failed", { reason: reason });
        throw new ProctorError(reason, 0, "media");
      }
      if (this.preview) {
        this.preview.muted = true;
        this.preview.srcObject = this.stream;
      }
      this._watchPage();
      try {
        await this._connect();
      } catch (error) {
        if (error instanceof ProctorError && FINAL_HTTP.has(error.status)) {
          this._fail(error.message);
          throw error;
        }
        this._scheduleReconnect();
      }
      return this;
    }

    async _connect() {
      const config = await this._fetchJson(this._api("/rtc-config"), { method: "GET" });
      const pc = new RTCPeerConnection({ iceServers: config.ice_servers || [] });
      this.pc = pc;
      for (const track of this.stream.getTracks()) {
        pc.addTransceiver(track, { direction: "sendonly", streams: [this.stream] });
      }
      this._openChannel(pc.createDataChannel("proctor"));
      pc.addEventListener("connectionstatechange", () => this._onConnectionState(pc));
      await pc.setLocalDescription(await pc.createOffer());
      await this._gatheringDone(pc);
      const answer = await this._fetchJson(this._api("/offer"), {
        method: "POST",
        body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer" }),
      });
      await pc.setRemoteDescription(answer);
    }

    /** The server answers without trickle ICE, so the offer carries every candidate. */
    _gatheringDone(pc) {
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

    _openChannel(channel) {
      this.channel = channel;
      channel.addEventListener("open", () => {
        this._retryDelay = 1000;
        this._disconnectedSince = null;
        this._setState("live");
      });
      channel.addEventListener("message", (event) => this._onMessage(event.data));
    }

    _onMessage(raw) {
      let message;
      try {
        message = JSON.parse(raw);
      } catch (e) {
        return;
      }
      const cb = this.callbacks;
      if (message.type === "flag" && cb.onFlag) cb.onFlag(message.flag);
      else if (message.type === "warning" && cb.onWarning) cb.onWarning(message);
      else if (message.type === "status" && cb.onStatus) cb.onStatus(message);
      else if (message.type === "session" && message.status === "ended") this._finish();
    }

    _onConnectionState(pc) {
      if (pc !== this.pc || this._ended) return;
      const state = pc.connectionState;
      if (state === "connected") {
        this._setState("live");
      } else if (state === "disconnected" || state === "failed") {
        this._scheduleReconnect();
      }
    }

    _scheduleReconnect() {
      if (this._ended) return;
      if (this._disconnectedSince === null) this._disconnectedSince = Date.now();
      if (Date.now() - this._disconnectedSince > RETRY_GIVE_UP_MS) {
        this._fail("The connection to the proctoring server was lost.");
        return;
      }
      this._setState("reconnecting");
      clearTimeout(this._retryTimer);
      this._retryTimer = setTimeout(async () => {
        if (this._ended) return;
        const old = this.pc;
        try {
          await this._connect();
          if (old && old !== this.pc) old.close();
        } catch (error) {
          if (error instanceof ProctorError && FINAL_HTTP.has(error.status)) {
            this._fail(error.message);
            return;
          }
          this._scheduleReconnect();
        }
      }, this._retryDelay);
      this._retryDelay = Math.min(this._retryDelay * 2, RETRY_MAX_MS);
    }

    _fail(reason) {
      this._teardown();
      this._setState("failed", { reason: reason });
    }

    // Browser telemetry -----------------------------------------------------------

    _watchPage() {
      const on = (target, name, handler) => {
        target.addEventListener(name, handler);
        this._listeners.push([target, name, handler]);
      };
      on(document, "visibilitychange", () =>
        this._report(document.visibilityState === "hidden" ? "tab_hidden" : "tab_visible"));
      on(global, "blur", () => this._report("window_blur"));
      on(global, "focus", () => this._report("window_focus"));
      on(document, "fullscreenchange", () => {
        if (!document.fullscreenElement) this._report("fullscreen_exit");
      });
      on(document, "paste", () => this._report("paste"));
      on(document, "copy", () => this._report("copy"));
    }

    _report(type) {
      if (this._ended) return;
      this._events.push({ type: type, time: Date.now() });
      this._sendEvents();
    }

    /** Events stay queued until the server has them; a failed POST is retried. */
    async _sendEvents() {
      if (this._sending || !this._events.length) return;
      this._sending = true;
      const batch = this._events.splice(0, 100);
      try {
        await this._fetchJson(this._api("/events"), {
          method: "POST",
          keepalive: true,
          body: JSON.stringify({ events: batch, sent_at: Date.now() }),
        });
      } catch (error) {
        if (!(error instanceof ProctorError && FINAL_HTTP.has(error.status))) {
          this._events.unshift.apply(this._events, batch);
          setTimeout(() => this._sendEvents(), 2000);
        }
      } finally {
        this._sending = false;
      }
      if (this._events.length) this._sendEvents();
    }

    // Ending ----------------------------------------------------------------------

    async end() {
      if (this._ended) return;
      await this._sendEvents();
      try {
        await this._fetchJson(this._api("/end"), { method: "POST", body: "{}" });
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
      clearTimeout(this._retryTimer);
      for (const [target, name, handler] of this._listeners) {
        target.removeEventListener(name, handler);
      }
      this._listeners = [];
      if (this.pc) this.pc.close();
      if (this.stream) this.stream.getTracks().forEach((track) => track.stop());
    }
  }

  global.Proctor = {
    /** Start proctoring; resolves with the session once connecting has begun. */
    start: function (options) {
      if (!options || !options.sessionId || !options.token) {
        return Promise.reject(new ProctorError("sessionId and token are required", 0, "options"));
      }
      return new ProctorSession(options).start();
    },
    ProctorError: ProctorError,
  };
})(window);
