// A small, local rendering of /openapi.json (FastAPI's default /docs loads Swagger UI from a CDN).
"use strict";
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}
function schemaText(s) {
  if (!s) return "";
  if (s.anyOf) return s.anyOf.map(schemaText).filter((t) => t !== "null").join(" | ");
  return s.format === "binary" ? "file" : s.type || (s.$ref || "").split("/").pop();
}
async function render() {
  const spec = await (await fetch("/openapi.json")).json();
  const root = document.getElementById("api");
  root.replaceChildren(el("p", spec.info.description || ""));
  const schemas = (spec.components || {}).schemas || {};
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const sec = el("section", null, "card");
      sec.append(el("h2", `${method.toUpperCase()} ${path}`), el("p", op.summary || ""));
      const rows = (op.parameters || []).map((p) => [p.name, p.in, schemaText(p.schema), p.description || ""]);
      const body = op.requestBody && op.requestBody.content;
      if (body) {
        for (const [type, media] of Object.entries(body)) {
          const ref = (media.schema.$ref || "").split("/").pop();
          const props = (schemas[ref] || media.schema).properties || {};
          for (const [name, s] of Object.entries(props)) rows.push([name, type, schemaText(s), s.description || ""]);
        }
      }
      if (rows.length) {
        const t = el("table");
        t.append(...[["name", "in", "type", "about"], ...rows].map((r, i) => {
          const tr = el("tr");
          tr.append(...r.map((c) => el(i ? "td" : "th", String(c))));
          return tr;
        }));
        sec.append(t);
      }
      const codes = Object.entries(op.responses || {}).map(([c, r]) => `${c}: ${r.description}`);
      sec.append(el("p", `Responses: ${codes.join("; ")}. Errors are JSON: {"error": message, "status": code}.`));
      root.append(sec);
    }
  }
  const ex = el("pre", 'curl -F file=@old.jpg "http://127.0.0.1:8000/api/colorize?size=256&format=png" -o new.png');
  const hinted = el("pre", 'curl -F file=@old.jpg -F \'hints=[{"x": 0.42, "y": 0.31, "colour": "#a33b2c"}]\' http://127.0.0.1:8000/api/colorize -o new.jpg');
  root.append(el("h2", "Example"), ex, el("p", "With colour hints (x, y relative to the photo, 0-1 from its top-left; only the colour's chroma is used; they need a hint model):"), hinted);
}
render().catch((e) => { document.getElementById("api").textContent = `Could not load /openapi.json: ${e}`; });
