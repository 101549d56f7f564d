// raydio's hand-written page: plain JavaScript over the public REST API (the session cookie set at /login
// authenticates every call). No framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (response.status === 401) { location.href = "/login?next=/app"; throw new Error("not logged in"); }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
  }
  return response;
}

const postJSON = (path, body) =>
  api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

// --- streaming chat, in a stored session ------------------------------------------------------
// The session (one per agent) is remembered in localStorage; its history and any action waiting for a decision
// are read back from the server, so a reload shows both.
const agentName = () => $("chat-agent").value.trim();
const sessionKey = () => `raydio-app-session:${agentName()}`;

function addMessage(role, text) {
  const item = document.createElement("li");
  item.className = role;
  item.textContent = text;
  $("chat-log").append(item);
  $("chat-log").scrollTop = $("chat-log").scrollHeight;
  return item;
}

function storedText(message) {
  if (message.role === "tool") return `⚙ ${message.content}`;
  const calls = (message.tool_calls || []).map((c) => `I would like to run ${c.function.name} with ${c.function.arguments}.`);
  return [message.content || "", ...calls].filter(Boolean).join("\n");
}

function showPending(action) {
  $("pending").hidden = !action;
  if (!action) return;
  $("pending").dataset.action = action.id;
  $("pending-text").textContent = `${action.proposed_by ? `Agent ${action.proposed_by}` : "The agent"} wants to run ` +
    `${action.name} with ${JSON.stringify(action.arguments)}. Nothing runs until you accept.`;
}

async function ensureSession() {
  const known = localStorage.getItem(sessionKey());
  if (known) return known;
  const session = await (await postJSON("/v1/sessions", { agent: agentName() || null })).json();
  localStorage.setItem(sessionKey(), session.id);
  return session.id;
}

async function loadSession(render) {
  const id = localStorage.getItem(sessionKey());
  let session = null;
  if (id) {
    try { session = await (await api(`/v1/sessions/${id}`)).json(); }
    catch (error) { localStorage.removeItem(sessionKey()); }  // deleted elsewhere: start afresh
  }
  if (render) {
    $("chat-log").replaceChildren();
    for (const message of session ? session.messages : []) {
      if (message.role !== "system") addMessage(message.role === "user" ? "user" : "assistant", storedText(message)).dataset.done = "true";
    }
  }
  showPending(session && session.pending_action);
  return session;
}

async function decide(verb) {
  const body = verb === "reject" ? { reason: $("reject-reason").value.trim() || "No reason given." } : {};
  body.action_id = $("pending").dataset.action;
  try {
    await postJSON(`/v1/sessions/${localStorage.getItem(sessionKey())}/actions/${verb}`, body);
    $("reject-reason").value = "";
  } catch (error) { addMessage("error", error.message); }
  await loadSession(true);
}
$("accept-action").addEventListener("click", () => decide("accept"));
$("reject-action").addEventListener("click", () => decide("reject"));

$("chat-agent").value = localStorage.getItem("raydio-app-agent") || "";
$("chat-agent").addEventListener("change", () => {
  localStorage.setItem("raydio-app-agent", agentName());
  loadSession(true);
});
loadSession(true);

$("chat-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("chat-input").value.trim();
  if (!text) return;
  $("chat-input").value = "";
  $("chat-send").disabled = true;
  addMessage("user", text);
  const bubble = addMessage("assistant", "");
  try {
    const session_id = await ensureSession();
    const request = { model: "chat", messages: [{ role: "user", content: text }], session_id, stream: true };
    if (!agentName()) request.max_tokens = 128;  // an agent's own default applies otherwise
    const response = await postJSON("/v1/chat/completions", request);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const events = buffer.split("\n\n");
      buffer = events.pop();
      for (const event of events) {
        const data = event.replace(/^data: /, "");
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        const delta = chunk.choices[0] && chunk.choices[0].delta.content;
        if (delta) bubble.textContent += delta;
      }
    }
    const session = await loadSession(false);
    const last = session && session.messages[session.messages.length - 1];
    if (last && last.role === "assistant") bubble.textContent = storedText(last);  // a proposal, in words
    bubble.dataset.done = "true";
  } catch (error) {
    bubble.className = "error";
    bubble.textContent = error.message;
  } finally {
    $("chat-send").disabled = false;
  }
});

// --- drawing a digit -------------------------------------------------------------------------
const pad = $("pad");
const ink = pad.getContext("2d");
function clearPad() { ink.fillStyle = "#fff"; ink.fillRect(0, 0, pad.width, pad.height); $("digit-bars").replaceChildren(); }
clearPad();
ink.lineWidth = 16; ink.lineCap = "round"; ink.strokeStyle = "#000";
let drawing = false;
const point = (e) => { const r = pad.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; };
pad.addEventListener("pointerdown", (e) => { drawing = true; ink.beginPath(); ink.moveTo(...point(e)); });
pad.addEventListener("pointermove", (e) => { if (drawing) { ink.lineTo(...point(e)); ink.stroke(); } });
window.addEventListener("pointerup", () => { drawing = false; });
$("digit-clear").addEventListener("click", () => { clearPad(); $("digit-result").textContent = ""; });

$("digit-classify").addEventListener("click", async () => {
  const blob = await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
  const form = new FormData();
  form.append("file", blob, "digit.png");
  try {
    const body = await (await api("/v1/digits/classify-image", { method: "POST", body: form })).json();
    const { label, probabilities } = body.predictions[0];
    $("digit-result").textContent = `It looks like a ${label} (${(probabilities[label] * 100).toFixed(1)}%).`;
    $("digit-bars").replaceChildren(...probabilities.map((p, digit) => {
      const row = document.createElement("div");
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = `${Math.max(2, p * 200)}px`;
      row.append(`${digit}`, bar, `${(p * 100).toFixed(1)}%`);
      return row;
    }));
  } catch (error) { $("digit-result").textContent = error.message; }
});

// --- comparing sentences ---------------------------------------------------------------------
$("compare-go").addEventListener("click", async () => {
  try {
    const body = await (await postJSON("/v1/embeddings",
      { model: "embedder", input: [$("sent-a").value, $("sent-b").value] })).json();
    const [a, b] = body.data.map((d) => d.embedding);
    const cosine = a.reduce((sum, x, i) => sum + x * b[i], 0);  // the vectors are unit length
    $("compare-result").textContent = `Cosine similarity ${cosine.toFixed(3)} (${body.usage.prompt_tokens} tokens).`;
  } catch (error) { $("compare-result").textContent = error.message; }
});

// --- watching a job --------------------------------------------------------------------------
$("job-submit").addEventListener("click", async () => {
  const inputs = $("job-inputs").value.split("\n").map((s) => s.trim()).filter(Boolean);
  try {
    let job = await (await postJSON("/v1/jobs", { kind: "embed", inputs })).json();
    $("job-progress").max = job.progress.total;
    while (!["succeeded", "failed", "cancelled"].includes(job.status)) {
      $("job-status").textContent = `Job ${job.id}: ${job.status}, ${job.progress.done}/${job.progress.total}`;
      await new Promise((resolve) => setTimeout(resolve, 500));
      job = await (await api(`/v1/jobs/${job.id}`)).json();
      $("job-progress").value = job.progress.done;
    }
    $("job-progress").value = job.progress.done;
    $("job-status").textContent = `Job ${job.id}: ${job.status}, ${job.progress.done}/${job.progress.total}` +
      (job.error ? ` — ${job.error}` : "");
  } catch (error) { $("job-status").textContent = error.message; }
});
