// the API page (/docs): renders /openapi.json; nothing fetched from elsewhere
"use strict";
fetch("/openapi.json").then((r) => r.json()).then((spec) => {
  document.getElementById("title").textContent = `${spec.info.title} ${spec.info.version}`;
  document.getElementById("desc").textContent = spec.info.description || "";
  const ops = document.getElementById("ops");
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const div = document.createElement("div");
      div.className = "op";
      const m = document.createElement("span");
      m.className = `m ${method}`; m.textContent = method.toUpperCase();
      const p = document.createElement("code"); p.textContent = path;
      const s = document.createElement("div"); s.textContent = op.summary || "";
      div.append(m, p, s);
      const params = (op.parameters || []).map((x) => `${x.name} (${x.in}${x.required ? ", required" : ""})`);
      const body = op.requestBody && op.requestBody.content;
      if (body) for (const [type, c] of Object.entries(body)) params.push(`body ${type}: ${ref(c.schema)}`);
      if (params.length) { const d = document.createElement("div"); d.textContent = "parameters: " + params.join("; "); div.append(d); }
      const codes = Object.keys(op.responses || {}).join(", ");
      const r = document.createElement("div"); r.textContent = `responses: ${codes}`; div.append(r);
      ops.append(div);
    }
  }
  const sc = document.getElementById("schemas");
  for (const [name, schema] of Object.entries((spec.components || {}).schemas || {})) {
    const h = document.createElement("h3"); h.textContent = name;
    const pre = document.createElement("pre"); pre.textContent = JSON.stringify(schema, null, 1);
    sc.append(h, pre);
  }
});
function ref(s) { return s && s.$ref ? s.$ref.split("/").pop() : JSON.stringify(s); }
