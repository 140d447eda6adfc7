// The browser client of the wsgate browser tests: open one WebSocket the way a web page must
// (no headers: the credential travels in the URL or as a subprotocol), send messages, and show
// in the DOM what came back and how the socket ended. The credential itself is never shown.
"use strict";

(function () {
  const byId = (id) => document.getElementById(id);
  let socket = null;
  let expected = 0;
  let echoes = [];

  function show(id, text) {
    byId(id).textContent = String(text);
  }

  function state(name) {
    const cell = byId("state");
    cell.textContent = name;
    cell.dataset.state = name;
  }

  function event(text) {
    const item = document.createElement("li");
    item.textContent = new Date().toISOString().slice(11, 23) + "  " + text;
    byId("events").appendChild(item);
  }

  // The URL without its query string: the query may hold a credential.
  function withoutQuery(url) {
    const parsed = new URL(url);
    return parsed.origin + parsed.pathname + (parsed.search ? "?..." : "");
  }

  function reset(form, url) {
    echoes = [];
    byId("events").replaceChildren();
    show("form", form);
    show("target", withoutQuery(url));
    show("protocol", "-");
    show("echoes", "-");
    show("error", "no");
    show("close-code", "-");
    show("close-reason", "-");
    show("closed-at", "-");
  }

  // form: a label for people; protocols: what `new WebSocket` offers; messages: sent on open.
  function connect(form, url, protocols, messages) {
    if (socket !== null && socket.readyState <= WebSocket.OPEN) {
      socket.close(1000, "next connection");
    }
    reset(form, url);
    expected = messages.length;
    state("connecting");
    const ws = protocols.length ? new WebSocket(url, protocols) : new WebSocket(url);
    socket = ws;
    ws.onopen = () => {
      if (socket !== ws) return;
      state("open");
      show("protocol", ws.protocol || "(none)");
      event("open, protocol " + JSON.stringify(ws.protocol));
      for (const message of messages) {
        ws.send(message);
        event("sent " + JSON.stringify(message));
      }
    };
    ws.onmessage = (message) => {
      if (socket !== ws) return;
      echoes.push(String(message.data));
      show("echoes", echoes.join(" | "));
      event("received " + JSON.stringify(message.data));
      if (echoes.length >= expected) state("echoed");
    };
    ws.onerror = () => {
      if (socket !== ws) return;
      show("error", "yes");
      event("error");
    };
    ws.onclose = (closed) => {
      if (socket !== ws) return;
      state("closed");
      show("close-code", closed.code);
      show("close-reason", closed.reason || "(none)");
      show("closed-at", Date.now());
      event("closed " + closed.code + " " + JSON.stringify(closed.reason) +
            (closed.wasClean ? "" : " (not clean)"));
    };
  }

  function send(message) {
    expected = echoes.length + 1;
    socket.send(message);
    event("sent " + JSON.stringify(message));
  }

  show("origin", location.origin);
  window.wsgateClient = { connect, send };
})();
