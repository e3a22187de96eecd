// The demo page: renders the state the server pushes (server-sent events) and sends what the
// person does. Every text is put in the DOM as text; message formatting comes from Telegram's
// entities, never from HTML, so nothing a message says can become markup.
"use strict";

const ui = {
  state: null,
  person: "approver1",
  chatId: null,
  replyTo: null,
  seenPods: new Set(),
  lastEdits: new Map(),
  firstRender: true,
};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  let data = {};
  try { data = JSON.parse(text); } catch (_) { data = { error: text }; }
  if (!response.ok) throw new Error(data.error || text || response.statusText);
  return data;
}

function toast(text) {
  const box = document.getElementById("toast");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 3000);
}

function showAlert(text) {
  const box = document.getElementById("alert");
  box.querySelector("p").textContent = text;
  box.hidden = false;
}

// -- message formatting ------------------------------------------------------------------------

function formatTime(entity, fallback) {
  const when = new Date(entity.unix_time * 1000);
  if (Number.isNaN(when.getTime())) return fallback;
  if (entity.date_time_format === "r") {
    const minutes = Math.round((Date.now() - when.getTime()) / 60000);
    if (Math.abs(minutes) < 1) return "just now";
    return minutes > 0 ? `${minutes} min ago` : `in ${-minutes} min`;
  }
  return when.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

function wrap(entity, inner, segment) {
  switch (entity.type) {
    case "bold": return el("b", null, inner);
    case "italic": return el("i", null, inner);
    case "underline": return el("u", null, inner);
    case "strikethrough": return el("s", null, inner);
    case "code": return el("code", null, inner);
    case "pre": return el("pre", null, inner);
    case "text_link": {
      const url = String(entity.url || "");
      if (!/^https?:\/\//i.test(url)) return inner;
      return el("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, inner);
    }
    case "date_time": {
      const iso = new Date(entity.unix_time * 1000).toISOString();
      return el("time", { datetime: iso, title: iso }, formatTime(entity, segment));
    }
    default: return inner;
  }
}

// Entities are UTF-16 offsets, as JavaScript strings are: split the text at every boundary and
// wrap each piece in the entities covering it, outermost (earliest, longest) first.
function renderText(text, entities) {
  const box = el("div", { class: "text" });
  const cuts = new Set([0, text.length]);
  for (const e of entities) { cuts.add(e.offset); cuts.add(e.offset + e.length); }
  const points = [...cuts].filter((p) => p >= 0 && p <= text.length).sort((a, b) => a - b);
  const ordered = [...entities].sort((a, b) => a.offset - b.offset || b.length - a.length);
  for (let i = 0; i + 1 < points.length; i++) {
    const start = points[i], end = points[i + 1];
    const segment = text.slice(start, end);
    let node = document.createTextNode(segment);
    const covering = ordered.filter((e) => e.offset <= start && end <= e.offset + e.length);
    for (const entity of covering.reverse()) node = wrap(entity, node, segment);
    box.append(node);
  }
  return box;
}

// -- rendering ---------------------------------------------------------------------------------

function currentChat() {
  const chats = ui.state.chats.filter(visibleChat);
  return chats.find((c) => c.id === ui.chatId) || chats[0];
}

function visibleChat(chat) {
  return chat.person === null || chat.person === ui.person;
}

function me() {
  return ui.state.people.find((p) => p.key === ui.person);
}

function render() {
  const state = ui.state;
  renderPeople(state);
  renderScenarios(state);
  renderChats(state);
  renderMessages(currentChat());
  renderCluster(state.cluster);
  ui.firstRender = false;
}

function renderPeople(state) {
  const box = document.getElementById("people");
  box.replaceChildren(...state.people.map((p) => el("button", {
    type: "button",
    "data-person": p.key,
    "aria-pressed": p.key === ui.person ? "true" : "false",
    onclick: () => { ui.person = p.key; ui.replyTo = null; render(); },
  }, p.label)));
}

function renderScenarios(state) {
  const box = document.getElementById("scenarios");
  if (box.childElementCount === state.scenarios.length) return;
  box.replaceChildren(...state.scenarios.map((s) => el("button", {
    type: "button",
    "data-scenario": s.name,
    onclick: async () => {
      try { await post("/api/fire", { scenario: s.name }); toast(`Fired: ${s.title}`); }
      catch (err) { toast(err.message); }
    },
  }, el("strong", null, s.title), el("span", null, s.blurb))));
}

function renderChats(state) {
  const chat = currentChat();
  ui.chatId = chat.id;
  const tabs = state.chats.filter(visibleChat).map((c) => {
    const name = c.person ? "Private chat with the bot" : c.title;
    const count = c.messages.length ? el("span", { class: "count" }, String(c.messages.length)) : null;
    return el("button", {
      type: "button", role: "tab", "data-chat": c.id,
      "aria-selected": c.id === chat.id ? "true" : "false",
      onclick: () => { ui.chatId = c.id; ui.replyTo = null; render(); },
    }, name, count);
  });
  document.getElementById("chats").replaceChildren(...tabs);
  const head = document.getElementById("chat-head");
  const who = me();
  if (chat.person) head.textContent = `${who.label} ↔ @opsgate_bot (private chat)`;
  else if (chat.topic) head.textContent = `${chat.title} · forum topic ${chat.topic} · you are @${who.username}`;
  else head.textContent = `${chat.title} · results of every execution are posted here too`;
}

function renderMessages(chat) {
  const box = document.getElementById("messages");
  const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  const byId = new Map(chat.messages.map((m) => [m.id, m]));
  const items = chat.messages.map((m) => renderMessage(chat, m, byId));
  if (!items.length) items.push(el("p", { class: "muted" }, "Nothing here yet. Fire an alert on the left."));
  box.replaceChildren(...items);
  if (nearBottom || ui.firstRender) box.scrollTop = box.scrollHeight;
  const replying = document.getElementById("replying");
  replying.hidden = ui.replyTo === null || !byId.has(ui.replyTo);
  if (!replying.hidden) {
    replying.querySelector("span").textContent =
      `Replying to #${ui.replyTo}: ${firstLine(byId.get(ui.replyTo).text)}`;
  }
}

function firstLine(text) {
  return (text.split("\n")[0] || "").slice(0, 80);
}

function renderMessage(chat, m, byId) {
  const mine = !m.from_bot && m.username === me().username;
  const key = `${chat.id}:${m.id}`;
  const edited = ui.lastEdits.has(key) && ui.lastEdits.get(key) !== m.edits;
  ui.lastEdits.set(key, m.edits);
  const classes = ["msg", m.from_bot ? "bot" : "user", mine ? "mine" : "", edited ? "flash" : ""];
  const bubble = el("div", { class: "bubble" });
  bubble.append(el("div", { class: "sender" }, m.from_bot ? "opsgate bot" : `${m.sender} @${m.username}`));
  if (m.reply_to !== null && byId.has(m.reply_to)) {
    const target = byId.get(m.reply_to);
    bubble.append(el("div", {
      class: "quote", title: "Show the message this replies to",
      onclick: () => {
        const node = document.querySelector(`.msg[data-id="${target.id}"]`);
        if (node) node.scrollIntoView({ behavior: "smooth", block: "center" });
      },
    }, `↪ ${target.from_bot ? "opsgate bot" : "@" + target.username}: ${firstLine(target.text)}`));
  }
  bubble.append(renderText(m.text, m.entities));
  const time = new Date(m.date * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  bubble.append(el("div", { class: "meta" },
    el("button", { type: "button", class: "reply", onclick: () => { ui.replyTo = m.id; render(); document.getElementById("text").focus(); } }, "Reply"),
    m.edits ? el("span", { class: "edited" }, `edited ${m.edits}×`) : null,
    el("span", null, `#${m.id} · ${time}`)));
  const node = el("div", { class: classes.join(" "), "data-id": m.id }, bubble);
  if (m.keyboard.length) node.append(renderKeyboard(chat, m));
  return node;
}

function renderKeyboard(chat, m) {
  return el("div", { class: "kb" }, ...m.keyboard.map((row) => el("div", { class: "row" },
    ...row.map((b) => {
      if (b.url) return el("a", { href: b.url, target: "_blank", rel: "noopener noreferrer" }, b.text);
      return el("button", {
        type: "button", "data-callback": b.data,
        onclick: () => tap(chat, m, b),
      }, b.text);
    }))));
}

async function tap(chat, m, button) {
  try {
    const answer = await post("/api/tap", {
      person: ui.person, chat_id: chat.id, message_id: m.id, data: button.data,
    });
    if (answer.text && answer.show_alert) showAlert(answer.text);
    else if (answer.text) toast(answer.text);
  } catch (err) {
    toast(err.message);
  }
}

function renderCluster(cluster) {
  document.getElementById("ns").textContent = `namespace ${cluster.namespace}`;
  const seen = new Set();
  const deployments = cluster.deployments.map((d) => {
    const pods = d.pods.map((p) => {
      seen.add(p.name);
      const fresh = !ui.firstRender && !ui.seenPods.has(p.name);
      const cls = ["pod", p.terminating ? "terminating" : p.ready ? "ready" : "pending", fresh ? "new" : ""];
      return el("span", {
        class: cls.join(" "), title: `${p.image} on ${p.node || "no node"} (${p.phase})`, "data-pod": p.name,
      }, `${p.name.slice(d.name.length + 1)} · ${p.node || "–"}`);
    });
    return el("div", { class: "deploy", "data-name": d.name, "data-replicas": d.replicas, "data-revision": d.revision },
      el("div", { class: "head" },
        el("span", { class: "name" }, d.name),
        el("span", { class: "replicas" }, `${d.ready}/${d.replicas} ready · rev ${d.revision}`)),
      el("div", { class: "image" }, d.image),
      el("div", { class: "pods" }, ...pods));
  });
  ui.seenPods = seen;
  document.getElementById("deployments").replaceChildren(...deployments);
  document.getElementById("nodes").replaceChildren(...cluster.nodes.map((n) => el("span", {
    class: `node ${n.cordoned ? "cordoned" : ""}`, "data-node": n.name,
  }, `${n.name} · ${n.cordoned ? "cordoned" : n.ready ? "Ready" : "NotReady"}`)));
}

// -- wiring ------------------------------------------------------------------------------------

function connect() {
  const live = document.getElementById("live");
  const events = new EventSource("/api/events");
  events.onopen = () => { live.textContent = "live"; live.className = "badge"; };
  events.onerror = () => { live.textContent = "reconnecting…"; live.className = "badge off"; };
  events.onmessage = (event) => {
    ui.state = JSON.parse(event.data);
    render();
  };
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("composer").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = document.getElementById("text");
    const text = input.value.trim();
    if (!text || !ui.state) return;
    try {
      await post("/api/say", { person: ui.person, chat_id: currentChat().id, text, reply_to: ui.replyTo });
      input.value = "";
      ui.replyTo = null;
      render();
    } catch (err) {
      toast(err.message);
    }
  });
  document.getElementById("reply-cancel").addEventListener("click", () => { ui.replyTo = null; render(); });
  document.getElementById("alert-ok").addEventListener("click", () => { document.getElementById("alert").hidden = true; });
  connect();
});
