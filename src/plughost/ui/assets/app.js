// The operator page: what the network runs, live, and the buttons to steer it. It uses the
// server's own routes with the token typed in, kept for this tab only (sessionStorage).
import { h, render } from "preact";
import { useCallback, useEffect, useMemo, useRef, useState } from "preact/hooks";
import htm from "htm";

const html = htm.bind(h);
const uPlot = window.uPlot; // uPlot's browser build, loaded by the page before this module
const TOKEN = "plughost-token";
const REFRESH_MS = 2000;
const FEED_KEEP = 300;
const EXAMPLE_BUNDLE = JSON.stringify(
  {
    agents: [
      {
        filename: "notifier_agent.py",
        source:
          "from agents.basic_agent import BasicAgent\n\n" +
          "class NotifierAgent(BasicAgent):\n" +
          '    name = "Notifier"\n' +
          '    metadata = {"name": "Notifier", "description": "Posts a message",\n' +
          '                "parameters": {"type": "object", "properties": {"message": {"type": "string"}},\n' +
          '                               "required": ["message"]}}\n\n' +
          "    def perform(self, message, **kwargs):\n" +
          '        return "posted: " + message\n',
      },
    ],
  },
  null,
  2,
);

// -- talking to the server ---------------------------------------------------------------

class Refused extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function client(token) {
  const headers = { Authorization: `Bearer ${token}` };
  async function call(method, path, body, contentType = "application/json") {
    const init = { method, headers: { ...headers } };
    if (body !== undefined) {
      init.headers["Content-Type"] = contentType;
      init.body = contentType === "application/json" ? JSON.stringify(body) : body;
    }
    const answer = await fetch(path, init);
    const text = await answer.text();
    let parsed = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = { error: { message: text } };
    }
    if (!answer.ok) {
      const message = parsed?.error?.message || parsed?.message || answer.statusText;
      throw new Refused(answer.status, `${answer.status}: ${message}`);
    }
    return parsed;
  }
  return {
    get: (path) => call("GET", path),
    post: (path, body) => call("POST", path, body),
    put: (path, body, type) => call("PUT", path, body, type),
    del: (path) => call("DELETE", path),
    headers,
  };
}

const segment = encodeURIComponent;

// The feed is server-sent events; EventSource cannot send a token, so it is read with fetch.
function followFeed(api, onEntry, onState) {
  let stopped = false;
  let after = 0;
  let controller = null;
  async function run() {
    while (!stopped) {
      controller = new AbortController();
      try {
        const answer = await fetch(`/api/feed?after=${after}`, {
          headers: api.headers,
          signal: controller.signal,
        });
        if (!answer.ok) throw new Error(`${answer.status}`);
        onState("live");
        const reader = answer.body.getReader();
        const decoder = new TextDecoder();
        let buffered = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffered += decoder.decode(value, { stream: true });
          let end;
          while ((end = buffered.indexOf("\n\n")) >= 0) {
            const block = buffered.slice(0, end);
            buffered = buffered.slice(end + 2);
            const data = block
              .split("\n")
              .filter((line) => line.startsWith("data: "))
              .map((line) => line.slice(6))
              .join("\n");
            if (data) {
              const entry = JSON.parse(data);
              after = Math.max(after, entry.id);
              onEntry(entry);
            }
          }
        }
      } catch (error) {
        if (stopped) return;
      }
      onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
  run();
  return () => {
    stopped = true;
    controller?.abort();
  };
}

// -- small parts ---------------------------------------------------------------------------

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleTimeString() : "";
}

function kib(bytes) {
  return bytes == null ? "-" : `${Math.round(bytes / 1024).toLocaleString()} KiB`;
}

function Section({ title, id, children, extra }) {
  return html`<section class="panel" data-testid=${id}>
    <header><h2>${title}</h2>${extra}</header>
    ${children}
  </section>`;
}

function useAction(onDone) {
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const run = useCallback(
    async (work) => {
      setBusy(true);
      setError(null);
      try {
        const result = await work();
        onDone?.(result);
        return result;
      } catch (failure) {
        setError(failure.message);
        return undefined;
      } finally {
        setBusy(false);
      }
    },
    [onDone],
  );
  return { error, busy, run };
}

function Problem({ text }) {
  return text ? html`<p class="error" role="alert">${text}</p>` : null;
}

// -- logging in ------------------------------------------------------------------------------

function Login({ onLogin, problem }) {
  const [token, setToken] = useState("");
  return html`<form class="login panel" data-testid="login" onSubmit=${(event) => {
    event.preventDefault();
    onLogin(token.trim());
  }}>
    <h1>plughost</h1>
    <label>Token (the admin's or a tenant's)
      <input type="password" name="token" autocomplete="off" value=${token}
        onInput=${(event) => setToken(event.target.value)} />
    </label>
    <button type="submit" disabled=${!token.trim()}>Sign in</button>
    <p class="hint">The token is kept in this tab only, and sent to this server only.</p>
    <${Problem} text=${problem} />
  </form>`;
}

// -- tenants -----------------------------------------------------------------------------

function DeployForm({ api, who, refresh, tenants }) {
  const [tenant, setTenant] = useState(who.admin ? "" : who.tenant);
  const [placement, setPlacement] = useState("");
  const [bundle, setBundle] = useState(EXAMPLE_BUNDLE);
  const [file, setFile] = useState(null);
  const [done, setDone] = useState(null);
  const { error, busy, run } = useAction(refresh);
  const deploy = (event) => {
    event.preventDefault();
    run(async () => {
      const query = placement ? `?placement=${placement}` : "";
      const path = `/api/tenants/${segment(tenant)}/bundle${query}`;
      let deployed;
      if (file) {
        const type = file.name.endsWith(".zip") ? "application/zip" : "application/gzip";
        deployed = await api.put(path, await file.arrayBuffer(), type);
      } else {
        let document;
        try {
          document = JSON.parse(bundle);
        } catch (failure) {
          throw new Error(`the bundle is not JSON: ${failure.message}`);
        }
        deployed = await api.put(path, document);
      }
      setDone(
        `${deployed.tenant} v${deployed.version} deployed` +
          (deployed.token ? `; its tenant token, shown once: ${deployed.token}` : ""),
      );
    });
  };
  return html`<form class="deploy" data-testid="deploy-form" onSubmit=${deploy}>
    <h3>Deploy</h3>
    <label>Tenant
      ${who.admin
        ? html`<input name="tenant" list="known-tenants" value=${tenant} required
            onInput=${(event) => setTenant(event.target.value)} />
            <datalist id="known-tenants">${tenants.map((t) => html`<option value=${t.name} />`)}</datalist>`
        : html`<input name="tenant" value=${tenant} readonly />`}
    </label>
    <label>Placement
      <select name="placement" value=${placement} onChange=${(event) => setPlacement(event.target.value)}>
        <option value="">as it runs, or in process</option>
        <option value="inprocess">inprocess</option>
        <option value="process">process</option>
        <option value="sandbox">sandbox</option>
      </select>
    </label>
    <label>JSON bundle
      <textarea name="bundle" rows="8" value=${bundle} disabled=${!!file}
        onInput=${(event) => setBundle(event.target.value)}></textarea>
    </label>
    <label>or an archive (.zip, .tar.gz)
      <input type="file" name="archive" accept=".zip,.tar.gz,.tgz"
        onChange=${(event) => setFile(event.target.files[0] || null)} />
    </label>
    <button type="submit" disabled=${busy || !tenant}>Deploy</button>
    ${done && html`<p class="ok" data-testid="deploy-result">${done}</p>`}
    <${Problem} text=${error} />
  </form>`;
}

function TenantsPanel({ api, who, data, selected, select, refresh }) {
  const workers = data.health?.workers || {};
  return html`<${Section} title="Tenants" id="tenants">
    <table>
      <thead><tr><th>tenant</th><th>version</th><th>placement</th><th>state</th>
        <th>agents</th><th>snapshots</th><th>sealed</th></tr></thead>
      <tbody>
        ${data.tenants.map((tenant) => html`<tr key=${tenant.name}
            class=${tenant.name === selected ? "selected" : ""} data-testid=${`tenant-${tenant.name}`}
            onClick=${() => select(tenant.name)}>
          <td><a href="#" onClick=${(event) => { event.preventDefault(); select(tenant.name); }}>${tenant.name}</a></td>
          <td>v${tenant.version}</td>
          <td>${tenant.placement}</td>
          <td>${workers[tenant.name]?.state || "in process"}</td>
          <td>${tenant.agents.length}</td>
          <td>${tenant.snapshots.length}</td>
          <td>${tenant.sealing?.sealed ? "sealed" : ""}</td>
        </tr>`)}
      </tbody>
    </table>
    ${data.tenants.length === 0 && html`<p class="hint">No tenant yet.</p>`}
    <${DeployForm} api=${api} who=${who} refresh=${refresh} tenants=${data.tenants} />
  <//>`;
}

function fieldsOf(tool) {
  const parameters = tool?.function?.parameters || {};
  const properties = parameters.properties || {};
  const required = new Set(parameters.required || []);
  return Object.entries(properties).map(([name, schema]) => ({
    name,
    schema,
    required: required.has(name),
  }));
}

// What the form holds, as the agent's arguments; a problem is thrown, in words.
function argumentsOf(fields, values) {
  const args = {};
  for (const { name, schema, required } of fields) {
    const raw = values[name];
    if (raw === undefined || raw === "") {
      if (required) throw new Error(`${name} is required`);
      continue;
    }
    const type = schema.type;
    if (type === "boolean") args[name] = !!raw;
    else if (type === "integer" || type === "number") {
      const number = Number(raw);
      if (Number.isNaN(number) || (type === "integer" && !Number.isInteger(number))) {
        throw new Error(`${name} must be ${type === "integer" ? "a whole number" : "a number"}`);
      }
      args[name] = number;
    } else if (type === "string" || type === undefined) args[name] = String(raw);
    else {
      try {
        args[name] = JSON.parse(raw);
      } catch {
        throw new Error(`${name} must be JSON (${type})`);
      }
    }
    if (schema.enum && !schema.enum.includes(args[name])) {
      throw new Error(`${name} must be one of ${schema.enum.join(", ")}`);
    }
  }
  return args;
}

function AgentCall({ api, tenant, agent, snapshots }) {
  const fields = useMemo(() => fieldsOf(agent.tool), [agent]);
  const [values, setValues] = useState({});
  const [snapshot, setSnapshot] = useState("");
  const [user, setUser] = useState("");
  const [output, setOutput] = useState(null);
  const { error, busy, run } = useAction();
  const call = (event) => {
    event.preventDefault();
    run(async () => {
      const args = argumentsOf(fields, values);
      const query = snapshot ? `?snapshot=${segment(snapshot)}` : "";
      const body = { args };
      if (user) body.user_id = user;
      const answer = await api.post(
        `/api/tenants/${segment(tenant)}/agents/${segment(agent.name)}/call${query}`,
        body,
      );
      setOutput(JSON.stringify(answer.output, null, 2));
    });
  };
  return html`<form class="agent" data-testid=${`agent-${agent.name}`} onSubmit=${call}>
    <h4>${agent.name}</h4>
    <p class="hint">${agent.description}</p>
    ${fields.map(({ name, schema, required }) => html`<label key=${name}>
      ${name}${required ? " *" : ""} <small>${schema.type || "any"}</small>
      ${schema.type === "boolean"
        ? html`<input type="checkbox" name=${name}
            onChange=${(event) => setValues({ ...values, [name]: event.target.checked })} />`
        : html`<input name=${name} value=${values[name] ?? ""}
            type=${schema.type === "number" || schema.type === "integer" ? "number" : "text"}
            onInput=${(event) => setValues({ ...values, [name]: event.target.value })} />`}
    </label>`)}
    <label>in <select name="snapshot" value=${snapshot} onChange=${(event) => setSnapshot(event.target.value)}>
      <option value="">the live code</option>
      ${snapshots.map((name) => html`<option value=${name}>snapshot ${name}</option>`)}
    </select></label>
    <label>user <input name="user" value=${user} placeholder="none"
      onInput=${(event) => setUser(event.target.value)} /></label>
    <button type="submit" disabled=${busy}>Call</button>
    ${output !== null && html`<pre class="output" data-testid="call-output">${output}</pre>`}
    <${Problem} text=${error} />
  </form>`;
}

function TenantDetail({ api, who, tenant, data, refresh }) {
  const [agents, setAgents] = useState([]);
  const [name, setName] = useState("");
  const { error, busy, run } = useAction(refresh);
  const described = data.tenants.find((each) => each.name === tenant);
  const version = described?.version;
  useEffect(() => {
    let live = true;
    api.get(`/api/tenants/${segment(tenant)}/agents`).then(
      (found) => live && setAgents(found),
      () => live && setAgents([]),
    );
    return () => {
      live = false;
    };
  }, [tenant, version]);
  if (!described) return null;
  const deploys = data.feed.filter((entry) => entry.tenant === tenant && entry.kind === "deploy");
  const sealed = described.sealing?.sealed;
  return html`<${Section} title=${`Tenant ${tenant}`} id="tenant-detail">
    <p>v${described.version}, ${described.placement}, ${described.files.length} files,
      digest ${described.digest.slice(0, 12)}${sealed ? html`, <strong>sealed</strong> by ${described.sealing.sealed_by}` : ""}</p>
    <div class="columns">
      <div>
        <h3>Agents</h3>
        ${agents.map((agent) => html`<${AgentCall} key=${agent.name} api=${api} tenant=${tenant}
          agent=${agent} snapshots=${described.snapshots} />`)}
      </div>
      <div>
        <h3>Snapshots</h3>
        <ul class="snapshots">
          ${described.snapshots.map((snapshot) => html`<li key=${snapshot}>${snapshot}
            <button type="button" class="small" disabled=${busy || sealed}
              onClick=${() => run(() => api.del(`/api/tenants/${segment(tenant)}/snapshots/${segment(snapshot)}`))}>delete</button></li>`)}
        </ul>
        <form data-testid="snapshot-form" onSubmit=${(event) => {
          event.preventDefault();
          run(async () => {
            await api.post(`/api/tenants/${segment(tenant)}/snapshots`, { name });
            setName("");
          });
        }}>
          <input name="snapshot-name" placeholder="name" value=${name} required
            onInput=${(event) => setName(event.target.value)} />
          <button type="submit" disabled=${busy || !name}>Take a snapshot</button>
        </form>
        <h3>Recent deploys</h3>
        <ul class="deploys">
          ${deploys.slice(0, 10).map((entry) => html`<li key=${entry.id}>${when(entry.at)} ${entry.message}</li>`)}
        </ul>
        ${!sealed && html`<button type="button" disabled=${busy}
          onClick=${() => run(() => api.post(`/api/tenants/${segment(tenant)}/seal`, { trigger: "operator page" }))}>Seal</button>`}
        ${sealed && who.admin && html`<button type="button" disabled=${busy}
          onClick=${() => run(() => api.del(`/api/tenants/${segment(tenant)}/seal`))}>Unseal</button>`}
        ${who.admin && html`<button type="button" class="danger" disabled=${busy || sealed}
          onClick=${() => confirm(`Remove tenant ${tenant} with its snapshots and state?`) &&
            run(() => api.del(`/api/tenants/${segment(tenant)}`))}>Remove</button>`}
        <${Problem} text=${error} />
      </div>
    </div>
  <//>`;
}

// -- namespaces, mods, instances, workers ------------------------------------------------------

function NamespacesPanel({ data }) {
  return html`<${Section} title="Loaded namespaces (least recently used first)" id="namespaces">
    <table>
      <thead><tr><th>namespace</th><th>state</th><th>placement</th><th>in flight</th><th>memory</th></tr></thead>
      <tbody>${data.namespaces.map((each) => html`<tr key=${each.namespace}>
        <td>${each.namespace}</td><td>${each.state}</td><td>${each.placement}</td>
        <td>${each.in_flight}</td><td>${kib(each.memory_bytes)}</td></tr>`)}</tbody>
    </table>
  <//>`;
}

function ModsPanel({ api, who, data, refresh }) {
  const [path, setPath] = useState("plughost.mods.shared_cache");
  const [tenant, setTenant] = useState("");
  const [config, setConfig] = useState("{}");
  const [report, setReport] = useState(null);
  const { error, busy, run } = useAction(refresh);
  const mods = data.mods;
  const load = (event) => {
    event.preventDefault();
    run(async () => {
      let parsed;
      try {
        parsed = JSON.parse(config || "{}");
      } catch {
        throw new Error("config must be a JSON object");
      }
      const body = { mod_path: path, config: parsed };
      if (tenant) body.tenant = tenant;
      const loaded = await api.post("/api/mods", body);
      setReport(`loaded ${loaded.key}`);
    });
  };
  const unload = (key, detail) =>
    run(async () => {
      const query = detail.tenant ? `?tenant=${segment(detail.tenant)}` : "";
      const answer = await api.del(`/api/mods/${segment(detail.mod_id)}${query}`);
      setReport(`${key}: ${answer.message}${answer.leaked.length ? `; still held: ${answer.leaked.join(", ")}` : ""}`);
    });
  const details = Object.entries(mods.details || {});
  return html`<${Section} title="Mods" id="mods">
    <table>
      <thead><tr><th>mod</th><th>tenant</th><th>path</th><th>status</th><th>origin</th><th></th></tr></thead>
      <tbody>${details.map(([key, detail]) => html`<tr key=${key} data-testid=${`mod-${key}`}>
        <td>${key}</td><td>${detail.tenant || "global"}</td><td>${detail.mod_path}</td>
        <td>${detail.status}</td><td>${detail.origin || ""}</td>
        <td>${detail.origin !== "bundle" && (who.admin || detail.tenant) && html`<button type="button" class="small"
          disabled=${busy} onClick=${() => unload(key, detail)}>unload</button>`}</td></tr>`)}</tbody>
    </table>
    <form class="inline" data-testid="mod-form" onSubmit=${load}>
      <input name="mod_path" value=${path} onInput=${(event) => setPath(event.target.value)} required />
      ${who.admin && html`<input name="mod_tenant" placeholder="tenant (none: global)" value=${tenant}
        onInput=${(event) => setTenant(event.target.value)} />`}
      <input name="mod_config" value=${config} onInput=${(event) => setConfig(event.target.value)} />
      <button type="submit" disabled=${busy}>Load</button>
    </form>
    ${report && html`<p class="ok" data-testid="mod-report">${report}</p>`}
    ${(mods.unloaded || []).slice(0, 5).map((each) => html`<p class="hint" key=${each.mod_id + each.unloaded_at}>
      ${when(each.unloaded_at)} unloaded ${each.tenant ? `${each.tenant}/` : ""}${each.mod_id}: ${unloadReport(each)}</p>`)}
    <${Problem} text=${error} />
  <//>`;
}

function unloadReport(report) {
  const held = Array.isArray(report.leaked) ? report.leaked.join("; ") : report.leaked;
  const freed = !report.verified
    ? "checking that its code was freed"
    : held
      ? `its code is still held: ${held}`
      : "its code was freed";
  return report.shutdown_error ? `${freed}; shutdown() raised ${report.shutdown_error}` : freed;
}

function InstancesPanel({ api, data, refresh }) {
  const { error, busy, run } = useAction(refresh);
  return html`<${Section} title="Instances" id="instances">
    <table>
      <thead><tr><th>RPC name</th><th>class</th><th>placement</th><th>origin</th><th></th></tr></thead>
      <tbody>${data.instances.map((each) => html`<tr key=${each.rpc_name}>
        <td>${each.rpc_name}</td><td>${each.class}</td><td>${each.placement}</td><td>${each.origin}</td>
        <td><button type="button" class="small" disabled=${busy}
          onClick=${() => run(() => api.post(`/api/instances/${each.rpc_name.split("/").map(segment).join("/")}/restart`))}>restart</button></td></tr>`)}</tbody>
    </table>
    <${Problem} text=${error} />
  <//>`;
}

function WorkersPanel({ data }) {
  const workers = Object.entries(data.health?.workers || {});
  return html`<${Section} title="Workers, sandboxes" id="workers">
    <table>
      <thead><tr><th>tenant</th><th>placement</th><th>state</th><th>restarts</th><th>pid</th><th>last error</th></tr></thead>
      <tbody>${workers.map(([tenant, worker]) => html`<tr key=${tenant} data-testid=${`worker-${tenant}`}>
        <td>${tenant}</td><td>${worker.placement}</td><td class=${`state-${worker.state}`}>${worker.state}</td>
        <td>${worker.restarts}</td><td>${worker.pid ?? "-"}</td><td>${worker.error || ""}</td></tr>`)}</tbody>
    </table>
    ${workers.length === 0 && html`<p class="hint">No tenant runs outside the server process.</p>`}
  <//>`;
}

// -- the feed ------------------------------------------------------------------------------

const KINDS = {
  all: () => true,
  deploys: (kind) => kind === "deploy" || kind === "removal",
  snapshots: (kind) => kind.startsWith("snapshot") || kind === "seal" || kind === "unseal",
  mods: (kind) => kind.startsWith("mod_") || kind.startsWith("instance_"),
  workers: (kind) => kind.startsWith("worker_"),
  refused: (kind) => kind === "refused",
};

function FeedPanel({ feed, state }) {
  const [kind, setKind] = useState("all");
  const [tenant, setTenant] = useState("");
  const shown = feed.filter(
    (entry) => KINDS[kind](entry.kind) && (!tenant || (entry.tenant || "").includes(tenant)),
  );
  return html`<${Section} title="What happens" id="feed" extra=${html`<span class="hint">${state}</span>`}>
    <div class="inline">
      <select name="feed-kind" value=${kind} onChange=${(event) => setKind(event.target.value)}>
        ${Object.keys(KINDS).map((name) => html`<option value=${name}>${name}</option>`)}
      </select>
      <input name="feed-tenant" placeholder="tenant" value=${tenant}
        onInput=${(event) => setTenant(event.target.value)} />
    </div>
    <ol class="feed">${shown.map((entry) => html`<li key=${entry.id} class=${`kind-${entry.kind}`}>
      <time>${when(entry.at)}</time> <b>${entry.kind}</b> ${entry.tenant ? html`<i>${entry.tenant}</i>` : ""} ${entry.message}
    </li>`)}</ol>
  <//>`;
}

// -- charts ----------------------------------------------------------------------------------

function Chart({ series }) {
  const box = useRef(null);
  const plot = useRef(null);
  useEffect(() => {
    const options = {
      width: 460,
      height: 180,
      series: [
        {},
        { label: "calls/s", stroke: "#2563eb", scale: "rate" },
        { label: "errors/s", stroke: "#dc2626", scale: "rate" },
        { label: "p50 ms", stroke: "#16a34a", scale: "ms" },
        { label: "p99 ms", stroke: "#9333ea", scale: "ms" },
      ],
      axes: [{}, { scale: "rate" }, { scale: "ms", side: 1, grid: { show: false } }],
    };
    plot.current = new uPlot(options, [[], [], [], [], []], box.current);
    return () => plot.current.destroy();
  }, []);
  useEffect(() => {
    if (plot.current && series) {
      plot.current.setData([series.at, series.calls_per_s, series.errors_per_s, series.p50_ms, series.p99_ms]);
    }
  }, [series]);
  return html`<div ref=${box}></div>`;
}

function ChartsPanel({ data }) {
  const tenants = Object.keys(data.series);
  return html`<${Section} title="Calls, latency and errors, last 5 minutes" id="charts">
    <div class="charts">${tenants.map((tenant) => html`<figure key=${tenant} data-testid=${`chart-${tenant}`}>
      <figcaption>${tenant}: ${data.series[tenant].calls_per_s.reduce((a, b) => a + b, 0) * 5} calls</figcaption>
      <${Chart} series=${data.series[tenant]} />
    </figure>`)}</div>
  <//>`;
}

// -- the page --------------------------------------------------------------------------------

function Dashboard({ api, who, onLogout }) {
  const [data, setData] = useState({
    health: null, tenants: [], namespaces: [], mods: {}, instances: [], series: {}, feed: [],
  });
  const [selected, setSelected] = useState(who.admin ? null : who.tenant);
  const [feedState, setFeedState] = useState("connecting");
  const [problem, setProblem] = useState(null);
  const refresh = useCallback(async () => {
    try {
      const [health, tenants, namespaces, mods, instances] = await Promise.all([
        api.get("/api/health"), api.get("/api/tenants"), api.get("/api/namespaces"),
        api.get("/api/mods"), api.get("/api/instances"),
      ]);
      const series = {};
      await Promise.all(tenants.map(async (tenant) => {
        series[tenant.name] = await api.get(`/api/tenants/${segment(tenant.name)}/calls?window=300&step=5`);
      }));
      setData((old) => ({ ...old, health, tenants, namespaces, mods, instances, series }));
      setProblem(null);
    } catch (failure) {
      setProblem(failure.message);
      if (failure.status === 401) onLogout("the token is no longer valid");
    }
  }, [api]);
  useEffect(() => {
    refresh();
    const timer = setInterval(refresh, REFRESH_MS);
    // A change seen in the feed is shown at once, but a burst of them refreshes once.
    let soon = null;
    const stop = followFeed(
      api,
      (entry) => {
        setData((old) => ({ ...old, feed: [entry, ...old.feed].slice(0, FEED_KEEP) }));
        if (entry.kind !== "refused" && soon === null) {
          soon = setTimeout(() => {
            soon = null;
            refresh();
          }, 200);
        }
      },
      setFeedState,
    );
    return () => {
      clearInterval(timer);
      clearTimeout(soon);
      stop();
    };
  }, [api]);
  const health = data.health;
  return html`<div class="page">
    <header class="top">
      <h1>plughost <small>${health?.network_id}</small></h1>
      <span class=${`status status-${health?.status}`} data-testid="status">${health?.status || "…"}</span>
      <span data-testid="who">${who.admin ? "admin: sees everything" : `tenant ${who.tenant}: sees its own tenant and the global mods`}</span>
      <button type="button" onClick=${() => onLogout(null)}>Sign out</button>
    </header>
    <${Problem} text=${problem} />
    <main>
      <${TenantsPanel} api=${api} who=${who} data=${data} selected=${selected} select=${setSelected} refresh=${refresh} />
      ${selected && html`<${TenantDetail} api=${api} who=${who} tenant=${selected} data=${data} refresh=${refresh} />`}
      <${ChartsPanel} data=${data} />
      <${FeedPanel} feed=${data.feed} state=${feedState} />
      <${WorkersPanel} data=${data} />
      <${NamespacesPanel} data=${data} />
      <${ModsPanel} api=${api} who=${who} data=${data} refresh=${refresh} />
      <${InstancesPanel} api=${api} data=${data} refresh=${refresh} />
    </main>
  </div>`;
}

function App() {
  const [token, setToken] = useState(sessionStorage.getItem(TOKEN));
  const [who, setWho] = useState(null);
  const [problem, setProblem] = useState(null);
  const api = useMemo(() => (token ? client(token) : null), [token]);
  useEffect(() => {
    if (!api) return;
    api.get("/api/whoami").then(setWho, (failure) => {
      sessionStorage.removeItem(TOKEN);
      setToken(null);
      setProblem(failure.status === 401 ? "That token is not valid here." : failure.message);
    });
  }, [api]);
  const logout = (why) => {
    sessionStorage.removeItem(TOKEN);
    setToken(null);
    setWho(null);
    setProblem(why);
  };
  if (!api || !who) {
    return html`<${Login} problem=${problem} onLogin=${(typed) => {
      sessionStorage.setItem(TOKEN, typed);
      setProblem(null);
      setToken(typed);
    }} />`;
  }
  return html`<${Dashboard} api=${api} who=${who} onLogout=${logout} />`;
}

const root = document.getElementById("app");
root.textContent = ""; // the note shown until this script runs
render(html`<${App} />`, root);
