#!/usr/bin/env node
// Stream one answer from a T.A.R.S. gateway over WSS.
//
//   npm install ws
//   node node_client.js --url https://localhost:8443 --client-id my-laptop \
//       --ca certs/tars.crt "What is the capital of France?"
//
// Gets an access token (POST /auth/token: with --secret for a registered
// client, without one under open enrollment), opens /ws/chat, sends one
// `chat`, prints the tokens as they stream and then the `complete` frame's
// figures. An `error` frame is printed and ends the program with exit code 1.
// If the connection drops before the answer is complete, it reconnects with
// backoff and, when the gateway offers it (`resume_window_secs` in
// `connection_ack`), sends `resume` with the seq of the last token printed,
// so the answer continues where it stopped; otherwise it asks again.
//
// --ca FILE trusts the gateway's own certificate; without it Node's trust
// store is used; --insecure skips verification (testing only). The token
// request uses the https module rather than fetch: Node 20's fetch cannot be
// given a CA file per request. The protocol is described in docs/protocol.md.
'use strict';

const fs = require('node:fs');
const https = require('node:https');
const { parseArgs } = require('node:util');
const WebSocket = require('ws');

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    url: { type: 'string', default: 'https://localhost:8443' },
    'client-id': { type: 'string' },
    secret: { type: 'string' },
    ca: { type: 'string' },
    insecure: { type: 'boolean', default: false },
    model: { type: 'string' },
    conversation: { type: 'string', default: 'node-example' },
    retries: { type: 'string', default: '5' },
  },
});
if (!opts['client-id']) {
  console.error('usage: node node_client.js --client-id ID [--url URL] [--secret S] [--ca FILE | --insecure] [prompt]');
  process.exit(2);
}
const prompt = positionals[0] || 'What is the capital of France?';
const base = opts.url.replace(/\/+$/, '');
const tls = { ca: opts.ca ? fs.readFileSync(opts.ca) : undefined, rejectUnauthorized: !opts.insecure };

class ServerError extends Error {}
class Refused extends Error {}
class Unavailable extends Error {}

// The seq of the last token printed: a resume asks for what follows it.
let lastSeq = 0;

// POST /auth/token → the access token. Errors are {"error": CODE, "message": TEXT}.
function getToken() {
  const body = { client_id: opts['client-id'], device_name: 'node example', device_type: 'nodejs' };
  if (opts.secret) body.client_secret = opts.secret;
  return new Promise((resolve, reject) => {
    const req = https.request(`${base}/auth/token`, {
      ...tls, method: 'POST', headers: { 'content-type': 'application/json' },
    }, (res) => {
      let text = '';
      res.on('data', (c) => { text += c; });
      res.on('end', () => {
        const json = JSON.parse(text);
        if (res.statusCode === 200) resolve(json.access_token);
        else reject(new ServerError(`token refused: ${res.statusCode} ${json.error}: ${json.message}`));
      });
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

// One connection: send the chat, stream the answer, resolve with `complete`
// once the connection has closed.
function ask(token) {
  return new Promise((resolve, reject) => {
    const wsUrl = `${base.replace(/^http/, 'ws')}/ws/chat?token=${encodeURIComponent(token)}`;
    const ws = new WebSocket(wsUrl, { ...tls });
    let result = null;
    let failure = null;
    ws.on('unexpected-response', (_req, res) => {
      // Refused before the upgrade: 401, 403 or 503 with a JSON body.
      reject(new Refused(`refused: HTTP ${res.statusCode}`));
      res.resume();
    });
    ws.on('message', (data) => {
      const msg = JSON.parse(data.toString());
      switch (msg.type) {
        case 'connection_ack': {
          console.error(`connected: session ${msg.session_id}`);
          if (lastSeq > 0 && msg.resume_window_secs > 0) {
            console.error(`[resuming after token ${lastSeq}]`);
            ws.send(JSON.stringify({ type: 'resume', conversation_id: opts.conversation, last_seq: lastSeq }));
            break;
          }
          if (lastSeq > 0) console.error('[asking again]');
          lastSeq = 0;
          const chat = { type: 'chat', content: prompt, conversation_id: opts.conversation };
          if (opts.model) chat.model = opts.model;
          ws.send(JSON.stringify(chat));
          break;
        }
        case 'token':
          if (msg.seq > lastSeq) { // a resume may replay tokens already printed
            lastSeq = msg.seq;
            process.stdout.write(msg.token);
          }
          break;
        case 'complete': result = msg; ws.close(1000); break;
        case 'error':
          if (msg.code === 'resume_unavailable') {
            lastSeq = 0; // the rest is lost: ask again on a new connection
            failure = new Unavailable(msg.message);
          } else {
            failure = new ServerError(`${msg.code}: ${msg.message}`);
          }
          ws.close(1000);
          break;
        case 'ping': ws.send(JSON.stringify({ type: 'pong' })); break;
        case 'system': console.error(`[gateway: ${msg.message}]`); break;
        default: break; // `thinking` frames (a thinking model's reasoning) are skipped here
      }
    });
    ws.on('error', (e) => { failure = failure || e; });
    ws.on('close', (code, reason) => {
      process.stdout.write('\n'); // end the answer's line, complete or not
      if (result) resolve(result);
      else reject(failure || new Error(`connection closed (${code} ${reason})`));
    });
  });
}

async function main() {
  const retries = Number(opts.retries);
  let token = null;
  for (let attempt = 0; ; attempt++) {
    try {
      token = token || await getToken();
      const c = await ask(token);
      console.log(`complete: ${c.total_tokens} tokens, model ${c.model}, first token ${c.first_token_ms} ms, `
        + `total ${c.latency_ms} ms, ${c.tokens_per_second} tokens/s, done_reason ${c.done_reason}`);
      return;
    } catch (e) {
      if (e instanceof ServerError) {
        console.error(`\nerror: ${e.message}`);
        process.exit(1);
      }
      console.error(`\nconnection lost (${e.message})`);
      if (e instanceof Refused) token = null; // e.g. expired or revoked: get a new one
    }
    if (attempt >= retries) {
      console.error(`gave up after ${retries} reconnections`);
      process.exit(1);
    }
    const delay = Math.min(2 ** attempt, 30);
    console.error(`reconnecting in ${delay} s`);
    await new Promise((r) => setTimeout(r, delay * 1000));
  }
}

main();
