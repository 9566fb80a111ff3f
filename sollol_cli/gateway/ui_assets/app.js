// sollol dashboard: reads /ui/api/status once, then one server-sent event stream (/ui/api/events).
// Plain JavaScript, no framework, no build step. Data is only ever put into the page as text.
"use strict";

(() => {
  const MAX_REQUESTS = 200;
  const $ = (selector) => document.querySelector(selector);
  const view = { status: null, traffic: null, requests: [], stream: null };

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("data-")) node.setAttribute(name, value);
      else node[name] = value;
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const svgNS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    const node = document.createElementNS(svgNS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    return node;
  }

  function bytes(n) {
    if (n === null || n === undefined) return "–";
    const gib = n / 2 ** 30;
    return gib >= 1 ? `${gib.toFixed(1)} GiB` : `${(n / 2 ** 20).toFixed(0)} MiB`;
  }
  const ms = (seconds) => (seconds === null || seconds === undefined ? "–" : `${(seconds * 1000).toFixed(0)} ms`);
  const num = (value, digits = 0) => (value === null || value === undefined ? "–" : Number(value).toFixed(digits));
  const clock = (epoch) => new Date(epoch * 1000).toLocaleTimeString();

  function setConnection(text, cls) {
    const conn = $("#conn");
    conn.textContent = text;
    conn.className = cls || "";
  }

  // --- login ---

  function showLogin(message) {
    if (view.stream) view.stream.close();
    view.stream = null;
    $("#board").hidden = true;
    $("#login").hidden = false;
    $("#logout").hidden = true;
    $("#login-error").textContent = message || "";
    setConnection("locked", "lost");
    $("#key").focus();
  }

  async function login(key) {
    const response = await fetch("/ui/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ key }),
      credentials: "same-origin",
    });
    return response.ok;
  }

  $("#login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("#key").value;
    if (await login(key)) {
      $("#key").value = "";
      start();
    } else {
      showLogin("That key is wrong.");
    }
  });

  // --- backends ---

  function renderBackends(status) {
    const body = $("#backends tbody");
    body.replaceChildren();
    for (const row of status.backends) {
      const loaded = new Set(row.loaded || []);
      const models = el("td", {});
      (row.models || []).forEach((name, i) => {
        if (i) models.append(", ");
        models.append(el("span", { class: loaded.has(name) ? "loaded" : "", text: name }));
      });
      const state = el("td", { class: "state" }, el("span", { class: `badge state-${row.state}`, text: row.state }));
      if (row.error) state.append(el("span", { class: "reason", text: row.state === "up" ? `last error: ${row.error}` : row.error }));
      const slots = row.slots ? `${row.in_use ?? 0} / ${row.slots}` : "–";
      const memory = row.total_bytes ? `${bytes(row.free_bytes)} / ${bytes(row.total_bytes)}` : "–";
      const probed = row.probed_s_ago === null || row.probed_s_ago === undefined ? "never" : `${num(row.probed_s_ago, 1)} s ago`;
      body.append(
        el("tr", { "data-backend": row.name, "data-state": row.state },
          el("th", { scope: "row" }, el("span", { text: row.name }),
            el("span", { class: "reason", text: `${row.kind} · ${row.address}${row.node ? ` · node ${row.node}` : ""}` })),
          state,
          el("td", { text: row.version || "–" }),
          models,
          el("td", { class: "num", text: slots }),
          el("td", { class: "num", text: memory }),
          el("td", { class: `breaker-${row.breaker}`, text: (row.breaker || "").replace("_", "-") }),
          el("td", { class: "num", text: probed }),
        ),
      );
    }
  }

  // --- models and placement ---

  function coordinatorText(coordinator) {
    if (!coordinator) return "–";
    const where = coordinator.node ? `node ${coordinator.node}` : "this machine";
    let text = `${coordinator.state || "running"} on ${where}, ${coordinator.host}:${coordinator.port}`;
    if (coordinator.state === "loading" && coordinator.loading_s != null) {
      text += `; loading for ${num(coordinator.loading_s, 0)} s`;
      if (coordinator.load_limit_s) text += ` (gives up after ${num(coordinator.load_limit_s, 0)} s)`;
    }
    if (coordinator.unloads_at) text += `; unloads at ${clock(coordinator.unloads_at)} if idle`;
    else if (coordinator.state === "ready") text += "; kept loaded";
    return text;
  }

  function coordinatorCell(model) {
    const cell = el("td", { text: coordinatorText(model.coordinator) });
    const failure = model.last_failure;
    if (failure) cell.append(el("span", { class: "reason failed", text: `failed at ${clock(failure.at)}: ${failure.message}` }));
    return cell;
  }

  function renderModels(status) {
    const body = $("#models tbody");
    body.replaceChildren();
    for (const model of status.models) {
      body.append(
        el("tr", { "data-model": model.name },
          el("th", { scope: "row", text: model.name }),
          el("td", { text: model.queued ? `${model.mode} · ${model.queued} queued` : model.mode }),
          el("td", { class: "reason-cell", text: withoutMode(model.reason, model.mode) }),
          coordinatorCell(model),
        ),
      );
    }
  }

  function renderPlacement(status) {
    const box = $("#placement");
    box.replaceChildren();
    const sharded = status.models.filter((m) => m.placement && m.placement.length);
    if (!sharded.length) {
      box.append(el("p", { class: "muted", text: "No sharded model is running." }));
      return;
    }
    box.append(el("p", { class: "legend" }, "Each bar spans the model's layers; ",
      el("i", { class: "w" }), "weights on an rpc-server", el("i", { class: "k" }), "its KV cache share",
      el("i", { class: "c" }), "the coordinator"));
    for (const model of sharded) {
      const parts = model.placement;
      const lastLayer = (model.coordinator && model.coordinator.n_layer) ||
        Math.max(0, ...parts.map((p) => (p.last_layer === null ? 0 : p.last_layer)));
      const layers = lastLayer + 1;
      const group = el("div", { class: "model-placement", "data-model": model.name },
        el("h3", { text: `${model.name}: ${layers} layers over ${parts.filter((p) => !p.coordinator).length} rpc-servers` }));
      for (const part of parts) {
        const track = el("div", { class: "track" });
        const span = el("div", { class: "span" });
        let label;
        if (part.coordinator) {
          span.style.left = "0%";
          span.style.width = "100%";
          span.textContent = "token embeddings";
          label = `coordinator: model ${num(part.model_mib, 1)} MiB`;
        } else if (part.first_layer === null) {
          span.hidden = true;
          label = `${part.device}: no layers`;
        } else {
          span.style.left = `${(100 * part.first_layer) / layers}%`;
          span.style.width = `${(100 * (part.last_layer - part.first_layer + 1)) / layers}%`;
          span.textContent = `${part.first_layer}–${part.last_layer}`;
          const total = part.model_mib + part.kv_mib;
          if (total > 0 && part.kv_mib > 0) {
            const kv = el("div", { class: "kv", title: `KV ${num(part.kv_mib, 1)} MiB` });
            kv.style.width = `${(100 * part.kv_mib) / total}%`;
            span.append(kv);
          }
          label = `${part.device}: layers ${part.first_layer}–${part.last_layer}, ` +
            `model ${num(part.model_mib, 1)} MiB, KV ${num(part.kv_mib, 1)} MiB`;
        }
        track.append(span);
        group.append(el("div", { class: `part${part.coordinator ? " coordinator" : ""}`, "data-device": part.device },
          el("span", { class: "part-label", text: label }), track));
      }
      box.append(group);
    }
  }

  // --- traffic ---

  const CHARTS = [
    ["Requests/s", ["requests_per_s"], 2],
    ["Tokens/s", ["tokens_per_s"], 1],
    ["Time to first token p50 / p95 (ms)", ["ttft_p50_ms", "ttft_p95_ms"], 0],
    ["Latency p50 / p95 (ms)", ["latency_p50_ms", "latency_p95_ms"], 0],
    ["Errors", ["errors"], 0],
    ["Queue depth", ["queue_depth"], 0],
  ];

  function sparkline(columns, names, width = 300, height = 48) {
    const values = names.flatMap((name) => columns[name].filter((v) => v !== null));
    const top = Math.max(1e-9, ...values);
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img" });
    names.forEach((name, i) => {
      const series = columns[name];
      const step = series.length > 1 ? width / (series.length - 1) : width;
      const points = series.map((v, x) => `${(x * step).toFixed(1)},${(height - 2 - ((v || 0) / top) * (height - 4)).toFixed(1)}`);
      const cls = name === "errors" ? "bad" : i ? "second" : "";
      chart.append(svg("polyline", { points: points.join(" "), class: cls }));
    });
    return chart;
  }

  // the current bucket until a request has ended in it, else the one before (a fresh bucket is not a drop to 0)
  function lastValue(columns, name) {
    const series = columns[name];
    const current = columns.requests_per_s[series.length - 1];
    return series[series.length - (current > 0 || series.length < 2 ? 1 : 2)];
  }

  function renderTraffic() {
    const traffic = view.traffic;
    if (!traffic) return;
    const select = $("#traffic-scope");
    const chosen = select.value;
    const options = [["cluster", "the whole cluster"]];
    for (const name of Object.keys(traffic.backends)) options.push([`backend:${name}`, `backend ${name}`]);
    for (const name of Object.keys(traffic.models)) options.push([`model:${name}`, `model ${name}`]);
    select.replaceChildren(...options.map(([value, text]) => el("option", { value, text })));
    select.value = options.some(([value]) => value === chosen) ? chosen : "cluster";
    const [kind, ...rest] = select.value.split(":");
    const name = rest.join(":");
    const columns = kind === "cluster" ? traffic.cluster : (kind === "backend" ? traffic.backends : traffic.models)[name];
    const charts = $("#charts");
    charts.replaceChildren();
    if (!columns) return;
    for (const [title, names, digits] of CHARTS) {
      // a waiting request has no backend until one frees a slot: queue depth is the cluster's and each model's
      if (names[0] === "queue_depth" && kind === "backend") continue;
      const latest = names.map((n) => num(lastValue(columns, n), digits)).join(" / ");
      const chart = sparkline(columns, names);
      chart.setAttribute("aria-label", `${title}, now ${latest}`);
      charts.append(el("div", { class: "chart" }, el("h3", {}, title, el("span", { class: "now", text: latest })), chart));
    }
    $("#traffic-note").textContent = view.status && !view.status.serving
      ? "sollol dashboard runs without the gateway: no request traffic here."
      : `Buckets of ${traffic.bucket_s} s; the last one is still filling.`;
  }

  $("#traffic-scope").addEventListener("change", renderTraffic);

  // --- recent requests ---

  function fillFilter(select, values) {
    const chosen = select.value;
    select.replaceChildren(el("option", { value: "", text: "all" }), ...[...values].sort().map((v) => el("option", { value: v, text: v })));
    select.value = values.has(chosen) ? chosen : "";
  }

  // "distribute: the cluster has no rpc backends" under "distribute" says it twice
  function withoutMode(reason, mode) {
    return mode && reason.startsWith(`${mode}: `) ? reason.slice(mode.length + 2) : reason;
  }

  function renderRequests() {
    const models = new Set(view.requests.map((r) => r.model).filter(Boolean));
    const backends = new Set(view.requests.map((r) => r.backend).filter(Boolean));
    fillFilter($("#filter-model"), models);
    fillFilter($("#filter-backend"), backends);
    const model = $("#filter-model").value;
    const backend = $("#filter-backend").value;
    const body = $("#requests tbody");
    body.replaceChildren();
    const shown = view.requests.filter((r) => (!model || r.model === model) && (!backend || r.backend === backend));
    for (const r of shown) {
      const why = el("td", {}, el("span", { text: r.mode || "–" }));
      if (r.reason) why.append(el("span", { class: "reason", text: withoutMode(r.reason, r.mode) }));
      for (const attempt of r.attempts || []) why.append(el("span", { class: "reason failed", text: `retried after: ${attempt}` }));
      if (r.error) why.append(el("span", { class: "reason failed", text: r.error }));
      const failed = r.status >= 400 || r.error;
      body.append(
        el("tr", { "data-seq": String(r.seq), "data-model": r.model || "", "data-backend": r.backend || "" },
          el("td", { class: "num", text: clock(r.at) }),
          el("td", { text: r.model || "–" }),
          el("td", { text: r.backend || "–" }),
          why,
          el("td", { class: `num${failed ? " failed" : ""}`, text: String(r.status) }),
          el("td", { class: "num", text: ms(r.ttft_s) }),
          el("td", { class: "num", text: num(r.tokens) }),
          el("td", { class: "num", text: num(r.tokens_per_s, 1) }),
          el("td", { class: "num", text: ms(r.duration_s) }),
        ),
      );
    }
    $("#requests-empty").hidden = shown.length > 0;
  }

  $("#filter-model").addEventListener("change", renderRequests);
  $("#filter-backend").addEventListener("change", renderRequests);

  function addRequest(request) {
    if (view.requests.some((r) => r.seq === request.seq)) return;
    view.requests.unshift(request);
    view.requests.length = Math.min(view.requests.length, MAX_REQUESTS);
    renderRequests();
  }

  // --- logs: one stream, open only while a log is chosen ---

  const MAX_LOG_CHARS = 200_000;
  let logStream = null;
  let logSourcesKey = null;

  async function loadLogSources() {
    const response = await fetch("/ui/api/logs", { credentials: "same-origin" });
    if (!response.ok) return;
    const { logs } = await response.json();
    const select = $("#log-source");
    const chosen = select.value;
    const options = [el("option", { value: "", text: "nothing" })];
    for (const source of logs) {
      const value = JSON.stringify([source.node, source.role]);
      options.push(el("option", { value, text: `${source.node || "this machine"} · ${source.role}` }));
    }
    select.replaceChildren(...options);
    select.value = options.some((o) => o.value === chosen) ? chosen : "";
    if (select.value !== chosen) followLog();
  }

  function followLog() {
    if (logStream) logStream.close();
    logStream = null;
    const pre = $("#log");
    pre.textContent = "";
    $("#log-note").textContent = "";
    const value = $("#log-source").value;
    pre.hidden = !value;
    if (!value) return;
    const [node, role] = JSON.parse(value);
    const query = new URLSearchParams({ node, role, lines: "200" });
    const stream = new EventSource(`/ui/api/logs/follow?${query}`);
    logStream = stream;
    stream.addEventListener("open", () => {
      pre.textContent = ""; // a reconnect sends the last lines again
      $("#log-note").textContent = "following";
    });
    stream.addEventListener("log", (event) => {
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent = (pre.textContent + JSON.parse(event.data).text).slice(-MAX_LOG_CHARS);
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    });
    stream.addEventListener("failed", (event) => {
      stream.close();
      $("#log-note").textContent = JSON.parse(event.data).message;
    });
    stream.addEventListener("error", () => {
      if (stream.readyState === EventSource.CLOSED) $("#log-note").textContent = "the log stream closed";
    });
  }

  $("#log-source").addEventListener("change", followLog);

  // --- status ---

  function renderStatus(status) {
    view.status = status;
    $("#cluster").textContent = status.cluster;
    $("#mode").textContent = status.serving ? "gateway" : "status only (no gateway)";
    $("#logout").hidden = !status.key_required;
    const load = status.gateway;
    $("#summary").textContent = `${status.reachable} of ${status.total} backends answer` +
      (status.serving ? ` · ${load.in_flight} requests in flight · ${load.queue_depth} queued` : "");
    renderBackends(status);
    renderModels(status);
    renderPlacement(status);
    // coordinators come and go: their logs with them
    const key = status.models.map((m) => (m.coordinator ? `${m.name}@${m.coordinator.node}` : "")).join(",");
    if (key !== logSourcesKey) {
      logSourcesKey = key;
      loadLogSources().catch(() => {});
    }
  }

  // --- start ---

  function listen() {
    if (view.stream) view.stream.close();
    const stream = new EventSource("/ui/api/events");
    view.stream = stream;
    stream.addEventListener("open", () => setConnection("live", "live"));
    stream.addEventListener("status", (event) => renderStatus(JSON.parse(event.data)));
    stream.addEventListener("traffic", (event) => {
      view.traffic = JSON.parse(event.data);
      renderTraffic();
    });
    stream.addEventListener("request", (event) => addRequest(JSON.parse(event.data)));
    stream.addEventListener("error", async () => {
      if (stream.readyState !== EventSource.CLOSED) {
        setConnection("reconnecting…", "lost");
        return;
      }
      // closed for good: a 401 (the key changed) or the server went away
      const response = await fetch("/ui/api/status", { credentials: "same-origin" }).catch(() => null);
      if (response && response.status === 401) showLogin("The key is needed again.");
      else setConnection("disconnected; reload to retry", "lost");
    });
  }

  async function start() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    if (fragment.has("key")) {
      history.replaceState(null, "", location.pathname + location.search); // out of the address bar and history
      if (!(await login(fragment.get("key")))) return showLogin("The key in the link is wrong.");
    }
    const response = await fetch("/ui/api/status", { credentials: "same-origin" });
    if (response.status === 401) return showLogin();
    if (!response.ok) {
      setConnection(`the gateway answered ${response.status}`, "lost");
      return;
    }
    $("#login").hidden = true;
    $("#board").hidden = false;
    renderStatus(await response.json());
    const recent = await fetch("/ui/api/requests?limit=" + MAX_REQUESTS, { credentials: "same-origin" });
    if (recent.ok) {
      view.requests = (await recent.json()).requests;
      renderRequests();
    }
    listen();
  }

  $("#logout").hidden = true;
  start().catch((error) => setConnection(`error: ${error.message}`, "lost"));
})();
