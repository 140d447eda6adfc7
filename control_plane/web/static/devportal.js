/* Developer Portal "Try Out": path parameters into the commands, copy buttons, and an
 * in-browser WebSocket console. Loaded as a file (the CSP forbids inline script). The access
 * token travels as the "choreo-oauth2-key" subprotocol (or ?access_token=), because a browser
 * cannot set an Authorization header on a WebSocket. */
(function () {
  "use strict";

  var CLOSE_NAMES = {
    1000: "normal closure", 1001: "going away", 1002: "protocol error", 1003: "unsupported data",
    1005: "no status", 1006: "closed without a close frame", 1007: "invalid payload",
    1008: "policy violation", 1009: "message too big", 1011: "server error",
    1013: "try again later"
  };

  function params() {
    var values = {};
    document.querySelectorAll(".path-param").forEach(function (input) {
      values[input.getAttribute("data-param")] = input.value.trim();
    });
    return values;
  }

  /* "/rooms/{roomId}" -> "/rooms/lobby" with the inputs' values (unfilled ones kept). */
  function fill(text) {
    var values = params();
    return text.replace(/\{([A-Za-z0-9_.-]+)\}/g, function (whole, name) {
      return values[name] ? encodeURIComponent(values[name]) : whole;
    });
  }

  function refreshCommands() {
    document.querySelectorAll("pre.command[data-template]").forEach(function (pre) {
      pre.textContent = fill(pre.getAttribute("data-template"));
    });
  }

  function copy(button) {
    var target = document.getElementById(button.getAttribute("data-copy"));
    if (!target) { return; }
    var text = target.textContent;
    var done = function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy"; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { selectText(target); });
    } else {
      selectText(target);
    }
  }

  function selectText(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function setupConsole(root) {
    var token = root.getAttribute("data-token");
    var wssBase = root.getAttribute("data-wss");
    var topic = document.getElementById("console-topic");
    var carrier = document.getElementById("console-carrier");
    var urlOut = document.getElementById("console-url");
    var connectButton = document.getElementById("console-connect");
    var disconnectButton = document.getElementById("console-disconnect");
    var message = document.getElementById("console-message");
    var sendButton = document.getElementById("console-send");
    var status = document.getElementById("console-status");
    var log = document.getElementById("console-log");
    var socket = null;
    var opened = false;

    function url(withToken) {
      var address = wssBase + fill(topic.value);
      if (withToken && carrier.value === "query") {
        address += (address.indexOf("?") < 0 ? "?" : "&") + "access_token=" + encodeURIComponent(token);
      }
      return address;
    }

    function showUrl() {
      urlOut.textContent = url(false) + (carrier.value === "query" ? "?access_token=…" : "");
    }

    function entry(kind, text) {
      var item = document.createElement("li");
      item.className = "log-" + kind;
      var time = document.createElement("time");
      time.textContent = new Date().toLocaleTimeString();
      var label = document.createElement("span");
      label.className = "log-kind";
      label.textContent = kind;
      var body = document.createElement("span");
      body.className = "log-text";
      body.textContent = text;
      item.appendChild(time);
      item.appendChild(label);
      item.appendChild(body);
      log.appendChild(item);
      log.scrollTop = log.scrollHeight;
    }

    function state(text, connected) {
      status.textContent = text;
      status.className = "badge " + (connected ? "state-published" : "");
      connectButton.disabled = connected || socket !== null;
      disconnectButton.disabled = !connected;
      message.disabled = !connected;
      sendButton.disabled = !connected;
      topic.disabled = socket !== null;
      carrier.disabled = socket !== null;
    }

    function connect() {
      if (socket) { return; }
      var address = url(true);
      entry("info", "connecting to " + url(false));
      try {
        socket = carrier.value === "query"
          ? new WebSocket(address)
          : new WebSocket(address, ["choreo-oauth2-key", token]);
      } catch (error) {
        entry("error", String(error));
        socket = null;
        return;
      }
      state("Connecting", false);
      opened = false;
      socket.onopen = function () {
        opened = true;
        entry("info", "connected" + (socket.protocol ? " (subprotocol " + socket.protocol + ")" : ""));
        state("Connected", true);
        message.focus();
      };
      socket.onmessage = function (event) {
        if (typeof event.data === "string") {
          entry("received", event.data);
        } else {
          entry("received", "[binary message, " + (event.data.size || event.data.byteLength || 0) + " bytes]");
        }
      };
      socket.onerror = function () {
        entry("error", opened
          ? "the connection broke"
          : "the gateway refused the connection (a browser does not show why): an expired or"
            + " revoked token, no or a blocked subscription, the API not deployed, this page's"
            + " origin not allowed by the API's CORS configuration, or the router's certificate"
            + " not trusted (open " + wssBase.replace("wss:", "https:").split("/").slice(0, 3).join("/")
            + "/ready once); wscat with the command above shows the gateway's answer");
      };
      socket.onclose = function (event) {
        var name = CLOSE_NAMES[event.code] ? " (" + CLOSE_NAMES[event.code] + ")" : "";
        entry("closed", "close " + event.code + name + (event.reason ? ": " + event.reason : ""));
        socket = null;
        state("Closed " + event.code, false);
      };
    }

    function send() {
      if (!socket || socket.readyState !== WebSocket.OPEN) { return; }
      socket.send(message.value);
      entry("sent", message.value);
      message.value = "";
      message.focus();
    }

    connectButton.addEventListener("click", connect);
    disconnectButton.addEventListener("click", function () {
      if (socket) { socket.close(1000, "closed from the portal"); }
    });
    sendButton.addEventListener("click", send);
    message.addEventListener("keydown", function (event) {
      if (event.key === "Enter") { event.preventDefault(); send(); }
    });
    topic.addEventListener("change", showUrl);
    carrier.addEventListener("change", showUrl);
    document.querySelectorAll(".path-param").forEach(function (input) {
      input.addEventListener("input", showUrl);
    });
    showUrl();
    state("Not connected", false);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".path-param").forEach(function (input) {
      input.addEventListener("input", refreshCommands);
    });
    document.querySelectorAll("button.copy").forEach(function (button) {
      button.addEventListener("click", function () { copy(button); });
    });
    var root = document.getElementById("ws-console");
    if (root) { setupConsole(root); }
    refreshCommands();
  });
}());
