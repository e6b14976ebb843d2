// zoe web UI: live updates of the execution page (blocking queries on the
// server) and a log follower. No framework: the pages work without this
// script; it only keeps them current.
"use strict";

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// <div data-live="/ui/executions/7/live" data-index="42"> with children
// <div data-part="name">: each answer replaces those parts' HTML, which
// the server rendered (and escaped) itself.
async function followLive(root) {
  const url = root.dataset.live;
  const state = root.querySelector("[data-live-state]");
  let index = Number(root.dataset.index || 0);
  for (;;) {
    try {
      const resp = await fetch(`${url}?index=${index}`, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (resp.redirected || resp.status === 401) {
        window.location.reload();
        return;
      }
      if (!resp.ok) {
        if (state) state.textContent = `Live updates paused (${resp.status}); retrying…`;
        await sleep(5000);
        continue;
      }
      const data = await resp.json();
      if (data.index !== index) {
        for (const [name, html] of Object.entries(data.parts)) {
          const el = root.querySelector(`[data-part="${name}"]`);
          if (el && el.innerHTML !== html) el.innerHTML = html;
        }
        index = data.index;
        root.dataset.index = String(index);
      }
      if (state) state.textContent = `Updates live (status: ${data.status}).`;
    } catch (e) {
      if (state) state.textContent = "Connection lost; retrying…";
      await sleep(3000);
    }
  }
}

// <pre data-log="/ui/services/3/log">: streams the log (followed) and
// appends it as text, reconnecting from the last byte after a network error.
async function followLog(pre) {
  const url = pre.dataset.log;
  const state = document.querySelector("[data-log-state]");
  const decoder = new TextDecoder();
  let offset = 0;
  for (;;) {
    try {
      const resp = await fetch(`${url}?follow=true&offset=${offset}`, { credentials: "same-origin" });
      if (!resp.ok) {
        if (state) state.textContent = `The log is not available: ${await resp.text()}`;
        return;
      }
      if (state) state.textContent = "Following the log live.";
      const reader = resp.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        offset += value.length;
        const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.append(document.createTextNode(decoder.decode(value, { stream: true })));
        if (atBottom) pre.scrollTop = pre.scrollHeight;
      }
      if (state) state.textContent = "End of the log (the service has ended).";
      return;
    } catch (e) {
      if (state) state.textContent = "Connection lost; reconnecting…";
      await sleep(3000);
    }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-live]").forEach((el) => followLive(el));
  document.querySelectorAll("pre[data-log]").forEach((el) => followLog(el));
});
