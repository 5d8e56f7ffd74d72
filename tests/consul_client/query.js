// Drives the npm `consul` client for tests/test_consul_node_client.py: one JSON request a
// line on stdin, {"call": "catalog.service.nodes", "opts": {...}}, answered in order with
// one JSON line on stdout: {"status", "index", "body"} or, when the client throws,
// {"error", "status", "body"} (the client's message, the HTTP status and body). Requests run one at a time, so a blocking query holds the next.
"use strict";

const { EventEmitter } = require("node:events");
const readline = require("node:readline");
const Consul = require("consul");

const [host, port] = process.argv.slice(2);
const consul = new Consul({ host, port: Number(port) });

function method(path) {
  const parts = path.split(".");
  const name = parts.pop();
  const owner = parts.reduce((obj, part) => obj[part], consul);
  return owner[name].bind(owner);
}

// The client hands back the HTTP response (for X-Consul-Index) only to a context that is
// an EventEmitter with includeResponse set, as its own watch() passes.
function context() {
  const ctx = new EventEmitter();
  ctx.includeResponse = true;
  return ctx;
}

async function answer(request) {
  const opts = { ...request.opts, ctx: context() };
  try {
    const [res, body] = await method(request.call)(opts);
    return {
      status: res.statusCode,
      index: res.headers["x-consul-index"] ?? null,
      body: body === undefined ? null : body,
    };
  } catch (err) {
    const res = err.response;
    return {
      error: err.message,
      status: res ? res.statusCode : null,
      body: res && res.body !== undefined ? String(res.body) : null,
    };
  }
}

async function main() {
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (line.trim()) {
      const reply = await answer(JSON.parse(line));
      process.stdout.write(JSON.stringify(reply, (_, v) => (typeof v === "bigint" ? String(v) : v)) + "\n");
    }
  }
}

main();
