// Renders /openapi.json as a reference page: every operation with its parameters,
// request body, security and answers, then every schema. No framework, nothing fetched
// but the description itself, and no inline script or style (the page's CSP has none).
"use strict";

const $ = (id) => document.getElementById(id);

// Builds an element; text is always set as text, never parsed as HTML.
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

const refName = (ref) => ref.split("/").pop();

// A one-line summary of a schema: a link for a reference, the type otherwise.
function typeOf(schema) {
  if (!schema) return "";
  if (schema.$ref) return el("a", { href: "#schema-" + refName(schema.$ref) }, refName(schema.$ref));
  if (schema.oneOf) {
    const span = el("span");
    schema.oneOf.forEach((s, i) => { if (i) span.append(" | "); span.append(typeOf(s)); });
    return span;
  }
  if (schema.type === "array") { const span = el("span", {}, "array of "); span.append(typeOf(schema.items)); return span; }
  const type = Array.isArray(schema.type) ? schema.type.join(" or ") : (schema.type || "any");
  const limits = [];
  for (const k of ["minLength", "maxLength", "minimum", "maximum", "pattern", "format", "default"]) {
    if (schema[k] !== undefined) limits.push(k + " " + JSON.stringify(schema[k]));
  }
  return type + (limits.length ? " (" + limits.join(", ") + ")" : "");
}

function schemaTable(schema) {
  const props = schema.properties || {};
  const required = new Set(schema.required || []);
  const rows = Object.entries(props).map(([name, s]) =>
    el("tr", {}, el("td", {}, el("code", {}, name)), el("td", {}, typeOf(s)),
      el("td", {}, required.has(name) ? "required" : "optional"), el("td", {}, s.description || "")));
  return el("table", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "type"), el("th", {}, ""), el("th", {}, "")), ...rows);
}

function security(op, doc) {
  const reqs = op.security || doc.security;
  if (!reqs || !reqs.length) return el("p", {}, "No credentials needed.");
  const ways = reqs.map((r) => Object.keys(r).join(" + ") || "none (see the description)");
  return el("p", {}, "Credentials: " + ways.join(", or ") + ".");
}

function operation(path, method, op, doc) {
  const id = "op-" + (op.operationId || method + path);
  const node = el("section", { class: "op", id },
    el("h3", {}, el("span", { class: "method " + method }, method), path),
    el("p", {}, op.summary || ""), op.description ? el("p", {}, op.description) : null,
    security(op, doc));
  const params = op.parameters || [];
  if (params.length) {
    node.append(el("h4", {}, "Parameters"), el("table", {},
      el("tr", {}, el("th", {}, "name"), el("th", {}, "in"), el("th", {}, "type"), el("th", {}, "")),
      ...params.map((p) => el("tr", {}, el("td", {}, el("code", {}, p.name)), el("td", {}, p.in),
        el("td", {}, typeOf(p.schema)), el("td", {}, (p.required ? "required. " : "") + (p.description || ""))))));
  }
  if (op.requestBody) {
    node.append(el("h4", {}, "Request body"));
    for (const [type, content] of Object.entries(op.requestBody.content || {})) {
      const p = el("p", {}, el("code", {}, type), ": ");
      p.append(typeOf(content.schema));
      node.append(p);
    }
  }
  node.append(el("h4", {}, "Responses"));
  const rows = Object.entries(op.responses || {}).map(([status, r]) => {
    const types = el("td");
    for (const [type, content] of Object.entries(r.content || {})) {
      types.append(el("code", {}, type), " ", typeOf(content.schema), el("br"));
    }
    const headers = Object.keys(r.headers || {}).join(", ");
    return el("tr", {}, el("td", { class: "status-" + status[0] }, status), el("td", {}, r.description || ""),
      types, el("td", {}, headers));
  });
  node.append(el("table", {}, el("tr", {}, el("th", {}, "status"), el("th", {}, "meaning"),
    el("th", {}, "body"), el("th", {}, "headers")), ...rows));
  return node;
}

async function main() {
  const response = await fetch("/openapi.json");
  const doc = await response.json();
  $("intro").textContent = (doc.info && doc.info.description) || "";
  const ops = $("operations");
  ops.replaceChildren();
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of ["get", "put", "post", "delete", "patch"]) {
      const op = item[method];
      if (!op) continue;
      ops.append(operation(path, method, op, doc));
      $("toc").append(el("a", { href: "#op-" + (op.operationId || method + path) }, method.toUpperCase() + " " + path));
    }
  }
  const schemas = (doc.components && doc.components.schemas) || {};
  for (const [name, schema] of Object.entries(schemas)) {
    const node = el("div", { class: "schema", id: "schema-" + name }, el("h3", {}, name),
      schema.description ? el("p", {}, schema.description) : null);
    if (schema.properties) node.append(schemaTable(schema));
    else node.append(el("pre", {}, JSON.stringify(schema, null, 2)));
    $("schemas").append(node);
  }
}

main().catch((e) => { $("operations").textContent = "Could not load /openapi.json: " + e; });
