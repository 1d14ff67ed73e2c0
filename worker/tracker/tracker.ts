// edgemetrics browser tracker: media events from <video>/<audio data-em-content="id">.
// Cookieless by default: no cookies, no storage writes. Never throws into the page.
//
// <script defer src="https://ingest.example.com/tracker.js"
//         data-endpoint="https://ingest.example.com/v1/collect"></script>
// <video data-em-content="v123" data-em-creator="c9" src="..."></video>
// Consent given (the platform's banner recorded it): data-consent="given" on the script tag,
// or window.edgemetrics.consent(true) later. The tracker then keeps a random session id in
// sessionStorage ("edgemetrics_sid") and sends it with each event; consent(false) deletes it
// and returns to cookieless. Opt out (wins over consent): navigator DNT/GPC,
// window.edgemetricsOptOut = true, or localStorage.edgemetrics_optout = "1".
((w: Window & { edgemetricsOptOut?: boolean; edgemetrics?: { consent: (on: boolean) => void } }, d: Document) => {
  interface Media extends HTMLMediaElement {
    _em?: State;
  }
  interface State {
    viewed: boolean; // a view was sent (first play)
    playing: boolean; // between play and pause/ended
    ended: boolean;
    left: boolean; // an abandon was sent since the last play
    last: number; // media time at the last sample
    unsent: number; // media seconds played and not yet reported
  }
  type Ev = { [k: string]: string | number; t: number };

  const script = d.currentScript as HTMLScriptElement | null;
  let endpoint = "/v1/collect";
  try {
    endpoint = (script && (script.getAttribute("data-endpoint") || new URL("/v1/collect", script.src).href)) || endpoint;
  } catch (e) {
    /* an inline copy without data-endpoint posts to this site's /v1/collect */
  }
  const nav = navigator as Navigator & { globalPrivacyControl?: boolean };
  let queue: Ev[] = [];

  const optedOut = (): boolean => {
    if (w.edgemetricsOptOut || nav.doNotTrack === "1" || nav.globalPrivacyControl) return true;
    try {
      return w.localStorage.getItem("edgemetrics_optout") === "1";
    } catch (e) {
      return false;
    }
  };

  const SID = "edgemetrics_sid";
  let consent = !!script && script.getAttribute("data-consent") === "given";

  // Consent mode only (cookieless never touches storage): the tab's session id, made on first
  // need; when opted out there is none, and a kept one is deleted.
  const session = (): string | void => {
    if (!consent) return;
    try {
      const s = w.sessionStorage;
      if (optedOut()) return s.removeItem(SID);
      let id = s.getItem(SID) || "";
      if (!/^[0-9a-f]{32}$/.test(id)) {
        const r = crypto.getRandomValues(new Uint8Array(16));
        id = "";
        for (let i = 0; i < 16; i++) id += (r[i] + 256).toString(16).slice(1);
        s.setItem(SID, id);
      }
      return id;
    } catch (e) {
      /* storage blocked: stay cookieless */
    }
  };

  const guard =
    <A extends unknown[]>(fn: (...a: A) => void) =>
    (...a: A): void => {
      try {
        fn(...a);
      } catch (e) {
        /* analytics must never break the page */
      }
    };

  const round = (x: number): number => Math.round(x * 1000) / 1000;
  const finite = (x: number): number => (isFinite(x) && x > 0 ? x : 0);

  const push = (el: Media, type: string, extra?: { [k: string]: number }): void => {
    const ds = el.dataset;
    const ev: Ev = {
      type,
      content_id: ds.emContent as string,
      content_type: ds.emType || (el.tagName === "AUDIO" ? "audio" : "video"),
      position: round(finite(el.currentTime)),
      media_duration: round(finite(el.duration)),
      t: Date.now(),
    };
    if (ds.emCreator) ev.creator_id = ds.emCreator;
    if (extra) for (const k in extra) ev[k] = extra[k];
    queue.push(ev);
  };

  // Media time actually played: positive steps of currentTime between samples while playing.
  // Seeks reset the sample point, and a jump of more than 4 s (a seek the events missed)
  // is not counted.
  const sample = (el: Media, s: State): void => {
    const now = el.currentTime;
    const step = now - s.last;
    if (s.playing && !el.seeking && step > 0 && step < 4 * (el.playbackRate || 1)) s.unsent += step;
    s.last = now;
  };

  const reportWatch = (el: Media, s: State): void => {
    sample(el, s);
    if (s.unsent >= 0.001) {
      push(el, "watch_time", { watch_time: round(s.unsent) });
      s.unsent = 0;
    }
  };

  const send = (): void => {
    if (!queue.length) return;
    const id = session(); // when opted out meanwhile, this deletes a kept id
    // Opting out after a play drops what is still queued.
    if (optedOut()) {
      queue = [];
      return;
    }
    const now = Date.now();
    const tz = (() => {
      try {
        return Intl.DateTimeFormat().resolvedOptions().timeZone;
      } catch (e) {
        return "";
      }
    })();
    while (queue.length) {
      const events = queue.splice(0, 50).map((ev) => {
        const out: { [k: string]: string | number } = {};
        for (const k in ev) if (k !== "t") out[k] = ev[k];
        out.age_ms = Math.max(0, Math.min(3600000, now - ev.t));
        if (tz) out.timezone = tz;
        if (id) out.session_id = id;
        return out;
      });
      // undefined drops the key: a cookieless body says nothing about consent.
      const body = JSON.stringify({ events, url: location.href, referrer: d.referrer, consent: id ? "given" : undefined });
      // text/plain keeps the request "simple": no CORS preflight, and sendBeacon allows it.
      const blob = new Blob([body], { type: "text/plain" });
      if (!(nav.sendBeacon && nav.sendBeacon(endpoint, blob))) {
        fetch(endpoint, { method: "POST", body: blob, keepalive: true, credentials: "omit" }).catch(() => {});
      }
    }
  };

  const states: Media[] = [];

  const attach = (el: Media): void => {
    if (el._em || !el.dataset.emContent) return;
    const s: State = (el._em = { viewed: false, playing: false, ended: false, left: false, last: 0, unsent: 0 });
    states.push(el);
    const on = (name: string, fn: () => void): void => el.addEventListener(name, guard(fn));
    on("play", () => {
      if (optedOut()) return;
      s.last = el.currentTime;
      if (!s.viewed) {
        s.viewed = true;
        push(el, "view");
        push(el, "play_start");
      } else if (s.ended) push(el, "play_start");
      else push(el, "resume");
      s.playing = true;
      s.ended = false;
      s.left = false;
    });
    on("timeupdate", () => sample(el, s));
    on("seeking", () => {
      sample(el, s);
      s.last = el.currentTime;
    });
    on("seeked", () => {
      s.last = el.currentTime;
    });
    on("pause", () => {
      if (!s.playing) return;
      sample(el, s);
      s.playing = false;
      // At the end the browser pauses too: that is a completion, not a pause.
      if (!el.ended) push(el, "pause");
    });
    on("ended", () => {
      if (!s.viewed) return;
      s.playing = true;
      reportWatch(el, s);
      s.playing = false;
      s.ended = true;
      push(el, "complete");
    });
  };

  const scan = guard((): void => {
    const found = d.querySelectorAll("video[data-em-content],audio[data-em-content]");
    for (let i = 0; i < found.length; i++) attach(found[i] as Media);
  });

  const hide = guard((): void => {
    for (const el of states) {
      const s = el._em as State;
      if (!s.viewed) continue;
      reportWatch(el, s);
      if (!s.ended && !s.left) {
        s.left = true;
        push(el, "abandon");
      }
    }
    send();
  });

  w.edgemetrics = {
    consent: guard((on: boolean) => {
      consent = !!on;
      if (on) session();
      else w.sessionStorage.removeItem(SID);
    }),
  };
  session();
  scan();
  if (d.readyState === "loading") d.addEventListener("DOMContentLoaded", scan);
  if (typeof MutationObserver === "function") new MutationObserver(scan).observe(d.documentElement, { childList: true, subtree: true });
  d.addEventListener("visibilitychange", () => {
    if (d.visibilityState === "hidden") hide();
  });
  w.addEventListener("pagehide", hide);
  setInterval(
    guard(() => {
      for (const el of states) reportWatch(el, el._em as State);
      send();
    }),
    15000,
  );
})(window, document);
