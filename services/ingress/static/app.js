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

// --- streaming chat ---------------------------------------------------------------------------
const history = [];

function addMessage(role, text) {
  const item = document.createElement("li");
  item.className = role;
  item.textContent = text;
  $("chat-log").append(item);
  $("chat-log").scrollTop = $("chat-log").scrollHeight;
  return item;
}

$("chat-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("chat-input").value.trim();
  if (!text) return;
  $("chat-input").value = "";
  $("chat-send").disabled = true;
  history.push({ role: "user", content: text });
  addMessage("user", text);
  const bubble = addMessage("assistant", "");
  try {
    const response = await postJSON("/v1/chat/completions",
      { model: "chat", messages: history, stream: true, max_tokens: 128 });
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
    bubble.dataset.done = "true";
    history.push({ role: "assistant", content: bubble.textContent });
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
