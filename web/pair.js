// T.A.R.S. pairing page (/pair#CODE): reads the one-time code from the URL
// fragment (browsers never send a fragment to the server, so the code is in
// no request line and no log), removes it from the address bar and the
// history, redeems it at POST /auth/pair, keeps the tokens where the chat
// page looks for them (sessionStorage, the same keys as app.js) and opens
// the chat page signed in. Without a fragment it asks for the code.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const status = $("pair-status");
  const form = $("pair-form");
  const input = $("pair-code");
  const submit = $("pair-submit");

  function show(text, isError) {
    status.textContent = text;
    status.classList.toggle("error", Boolean(isError));
  }

  function askForCode(text, isError) {
    show(text, isError);
    form.hidden = false;
    input.focus();
  }

  async function redeem(code) {
    show("Pairing…", false);
    submit.disabled = true;
    let r;
    let data = null;
    try {
      r = await fetch("/auth/pair", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ code }),
        cache: "no-store",
      });
      data = await r.json().catch(() => null);
    } catch (e) {
      askForCode(`Cannot reach the gateway: ${e.message}`, true);
      return;
    } finally {
      submit.disabled = false;
    }
    if (!r.ok || !data || !data.access_token) {
      const why = (data && data.message) || `HTTP ${r.status}`;
      askForCode(`Pairing failed: ${why}.`, true);
      return;
    }
    const s = window.sessionStorage;
    s.setItem("tars.access_token", data.access_token);
    s.setItem("tars.refresh_token", data.refresh_token);
    s.setItem("tars.expires_at", String(Date.now() + data.expires_in * 1000));
    s.setItem("tars.expires_in", String(data.expires_in));
    s.setItem("tars.client_id", data.client_id);
    show(`Paired as ${data.client_id}. Opening the chat…`, false);
    window.location.replace("/");
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    redeem(input.value.trim());
  });

  const code = decodeURIComponent(window.location.hash.slice(1));
  if (code) {
    window.history.replaceState(null, "", window.location.pathname);
    redeem(code);
  } else {
    askForCode("Type the code that `tars pair` printed.", false);
  }
})();
