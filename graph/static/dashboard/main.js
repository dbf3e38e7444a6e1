// The dashboard: a token, the instances it sees, a range in the browser's timezone, and
// the metrics, series and per-instance breakdown of that range, all over GraphQL.

import { ApiError, graphql } from "./api.js";
import { drawBars, drawSeries } from "./charts.js";
import { seriesCsv } from "./csv.js";
import { customRange, dayValue, intervalFor, presetRange, timeZone } from "./ranges.js";

const TOKEN_KEY = "messageMetrics.token";

const INSTANCES_QUERY = `query DashboardInstances {
  instances { name ignoreGroupMessages createdAt totalMessages lastMessageAt }
}`;

const METRICS_FIELDS = `instance instances totalMessages messagesReceived messagesSent
  messagesByType { key count } groupMessages individualMessages messagesWithMedia
  mediaByType { key count } messagesByStatus { key count } uniqueChats uniqueGroups
  uniqueContacts messagesLast7Days messagesLast30Days firstMessageAt lastMessageAt`;

const DASHBOARD_QUERY = `query Dashboard(
  $instances: [String!], $range: TimeRange!, $interval: Interval!, $timezone: String!
) {
  metrics(instances: $instances, range: $range) { ${METRICS_FIELDS} }
  metricsByInstance(instances: $instances, range: $range) {
    instance totalMessages messagesSent messagesReceived groupMessages individualMessages
    messagesWithMedia uniqueContacts lastMessageAt
  }
  series(instances: $instances, range: $range, interval: $interval, timezone: $timezone) {
    instance interval timezone
    points {
      start end totalMessages messagesSent messagesReceived groupMessages
      individualMessages messagesWithMedia messagesByType { key count }
      messagesByStatus { key count }
    }
  }
}`;

const SETTINGS_MUTATION = `mutation DashboardSettings($instance: String!, $ignore: Boolean!) {
  updateInstanceSettings(instance: $instance, ignoreGroupMessages: $ignore) {
    name ignoreGroupMessages
  }
}`;

/** The cards, one per scalar field of `metrics` (its lists are the bar charts). */
const CARDS = [
  ["totalMessages", "Messages"],
  ["messagesSent", "Sent"],
  ["messagesReceived", "Received"],
  ["groupMessages", "In groups"],
  ["individualMessages", "One-to-one"],
  ["messagesWithMedia", "With media"],
  ["uniqueChats", "Chats"],
  ["uniqueGroups", "Groups"],
  ["uniqueContacts", "Contacts"],
  ["messagesLast7Days", "Of them in the last 7 days"],
  ["messagesLast30Days", "Of them in the last 30 days"],
  ["firstMessageAt", "First message", "date"],
  ["lastMessageAt", "Last message", "date"],
];

const TITLES = {
  unauthenticated: "The token was not accepted",
  forbidden: "This token may not see that",
  "not-found": "Instance not found",
  "rate-limited": "Too many requests",
  unavailable: "The service is unavailable",
  "bad-input": "The request was refused",
  network: "Cannot reach the service",
  error: "Something went wrong",
};

const HINTS = {
  unauthenticated:
    "It is missing or matches no account or instance. Paste a token printed by " +
    "`message-metrics serve`, `accounts create` or `instances create`.",
  forbidden: "An instance token sees its own instance only.",
  "not-found": "Every instance named must belong to the token's account.",
  "rate-limited": "This token has used its points for the moment.",
  unavailable: "The service cannot answer right now; this is not your token's fault.",
};

const $ = (id) => document.getElementById(id);
const numbers = new Intl.NumberFormat();
const dates = new Intl.DateTimeFormat(undefined, {
  dateStyle: "medium",
  timeStyle: "short",
  timeZone,
});

const state = {
  token: null,
  instances: [],
  loaded: false, // whether `instances` holds the token's answer
  selected: null, // null: every instance (the first load); else a Set of names
  series: null,
  range: null,
  generation: 0,
  countdown: null,
};

function init() {
  $("timezone").textContent = timeZone;
  $("token-form").addEventListener("submit", onToken);
  $("token-forget").addEventListener("click", forgetToken);
  $("range").addEventListener("change", onRangeChange);
  $("range-from").addEventListener("change", refresh);
  $("range-to").addEventListener("change", refresh);
  $("refresh").addEventListener("click", () => (state.loaded ? refresh() : loadInstances()));
  $("csv").addEventListener("click", downloadCsv);
  const today = new Date();
  $("range-from").value = dayValue(new Date(today.getFullYear(), today.getMonth(), today.getDate() - 6));
  $("range-to").value = dayValue(today);
  showRange();
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    $("token").value = saved;
    useToken(saved);
  }
}

function onToken(event) {
  event.preventDefault();
  const token = $("token").value.trim();
  if (!token) {
    showError(new ApiError({ state: "unauthenticated", code: null, message: "Enter a token.", status: null, retryAfter: null }));
    return;
  }
  useToken(token);
}

function useToken(token) {
  state.token = token;
  state.loaded = false;
  state.selected = null;
  sessionStorage.setItem(TOKEN_KEY, token);
  clearMessage();
  loadInstances();
}

function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.generation += 1;
  $("token").value = "";
  $("main").hidden = true;
  clearMessage();
  setStatus("Token forgotten.");
  $("token").focus();
}

async function loadInstances() {
  if (!state.token || state.countdown) return;
  const generation = ++state.generation;
  setStatus("Loading instances…");
  try {
    const data = await graphql({ token: state.token, query: INSTANCES_QUERY });
    if (generation !== state.generation) return;
    state.instances = data.instances;
    state.loaded = true;
    renderInstances();
    $("main").hidden = false;
    await refresh();
  } catch (error) {
    if (generation === state.generation) fail(error);
  }
}

function renderInstances() {
  const box = $("instances");
  box.replaceChildren();
  state.instances.forEach((instance, index) => {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "checkbox";
    input.id = `instance-${index}`;
    input.value = instance.name;
    input.checked = state.selected === null || state.selected.has(instance.name);
    input.addEventListener("change", onSelectionChange);
    label.append(input, document.createTextNode(instance.name));
    box.append(label);
  });
  if (state.instances.length === 0) box.textContent = "This token sees no instance yet.";
  rememberSelection();
}

function onSelectionChange() {
  rememberSelection();
  refresh();
}

function rememberSelection() {
  const ticked = [...$("instances").querySelectorAll("input:checked")].map((input) => input.value);
  state.selected = new Set(ticked);
}

function selectedNames() {
  return state.instances.map(({ name }) => name).filter((name) => state.selected.has(name));
}

function onRangeChange() {
  $("custom-range").hidden = $("range").value !== "custom";
  refresh();
}

function currentRange() {
  const preset = $("range").value;
  return preset === "custom"
    ? customRange($("range-from").value, $("range-to").value)
    : presetRange(preset);
}

function showRange(range = currentRange()) {
  const day = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short", timeZone });
  for (const [id, date] of [["range-start", range.from], ["range-end", range.to]]) {
    $(id).dateTime = date ? date.toISOString() : "";
    $(id).textContent = date ? day.format(date) : "…";
  }
}

async function refresh() {
  if (!state.token || state.countdown) return;
  const range = currentRange();
  if (range.error) {
    showError(new ApiError({ state: "bad-input", code: null, message: range.error, status: null, retryAfter: null }));
    return;
  }
  showRange(range);
  const names = selectedNames();
  if (names.length === 0) {
    setStatus("Tick at least one instance.");
    return;
  }
  const interval = intervalFor(range);
  const generation = ++state.generation;
  setStatus("Loading metrics…");
  $("main").setAttribute("aria-busy", "true");
  try {
    const data = await graphql({
      token: state.token,
      query: DASHBOARD_QUERY,
      variables: {
        instances: names,
        range: { from: range.from.toISOString(), to: range.to.toISOString() },
        interval,
        timezone: timeZone,
      },
    });
    if (generation !== state.generation) return;
    state.series = data.series;
    state.range = range;
    render(data);
    clearMessage();
    setStatus(`Updated at ${new Date().toLocaleTimeString()}.`);
  } catch (error) {
    if (generation === state.generation) fail(error);
  } finally {
    if (generation === state.generation) $("main").removeAttribute("aria-busy");
  }
}

function render({ metrics, metricsByInstance, series }) {
  renderCards(metrics);
  $("series-interval").textContent = series.interval.toLowerCase();
  drawSeries($("series-chart"), series, timeZone);
  drawBars($("type-chart"), metrics.messagesByType, "Messages");
  drawBars($("status-chart"), metrics.messagesByStatus, "Messages");
  drawBars($("media-chart"), metrics.mediaByType, "Media messages");
  renderKeyCounts($("type-table"), metrics.messagesByType, "Type");
  renderKeyCounts($("status-table"), metrics.messagesByStatus, "Status");
  renderKeyCounts($("media-table"), metrics.mediaByType, "Media type");
  renderPerInstance(metricsByInstance);
  const main = $("main");
  main.dataset.from = state.range.from.toISOString();
  main.dataset.to = state.range.to.toISOString();
  main.dataset.interval = series.interval;
  main.dataset.updates = String(Number(main.dataset.updates || 0) + 1);
}

function renderCards(metrics) {
  $("cards-instances").textContent = `(${metrics.instances.join(", ") || "none"})`;
  const cards = CARDS.map(([field, title, kind]) => {
    const card = document.createElement("div");
    card.className = "card";
    card.dataset.field = field;
    const term = document.createElement("dt");
    term.textContent = title;
    const value = document.createElement("dd");
    const raw = metrics[field];
    value.dataset.value = raw === null ? "" : String(raw);
    if (kind === "date") {
      value.className = "date";
      value.textContent = raw === null ? "—" : dates.format(new Date(raw));
    } else {
      value.textContent = numbers.format(raw);
    }
    card.append(term, value);
    return card;
  });
  $("cards").replaceChildren(...cards);
}

function renderKeyCounts(table, keyCounts, heading) {
  const head = document.createElement("tr");
  head.append(cellOf("th", heading, "col"), cellOf("th", "Messages", "col", "num"));
  const rows = keyCounts.map(({ key, count }) => {
    const row = document.createElement("tr");
    row.append(cellOf("th", key, "row"), cellOf("td", numbers.format(count), null, "num"));
    row.dataset.key = key;
    row.dataset.count = String(count);
    return row;
  });
  table.replaceChildren(head, ...rows);
}

function renderPerInstance(rows) {
  const settings = new Map(state.instances.map((instance) => [instance.name, instance]));
  const body = $("per-instance").tBodies[0];
  body.replaceChildren(
    ...rows.map((metrics, index) => {
      const row = document.createElement("tr");
      row.dataset.instance = metrics.instance;
      row.append(cellOf("th", metrics.instance, "row"));
      for (const field of [
        "totalMessages",
        "messagesSent",
        "messagesReceived",
        "groupMessages",
        "individualMessages",
        "messagesWithMedia",
        "uniqueContacts",
      ]) {
        const cell = cellOf("td", numbers.format(metrics[field]), null, "num");
        cell.dataset.field = field;
        cell.dataset.value = String(metrics[field]);
        row.append(cell);
      }
      const last = metrics.lastMessageAt;
      row.append(cellOf("td", last ? dates.format(new Date(last)) : "—"));
      row.append(toggleCell(settings.get(metrics.instance), index));
      return row;
    }),
  );
}

function toggleCell(instance, index) {
  const cell = document.createElement("td");
  if (!instance) return cell;
  const input = document.createElement("input");
  input.type = "checkbox";
  input.id = `ignore-${index}`;
  input.checked = instance.ignoreGroupMessages;
  input.dataset.instance = instance.name;
  const label = document.createElement("label");
  label.htmlFor = input.id;
  label.className = "visually-hidden";
  label.textContent = `Ignore group messages of ${instance.name}`;
  input.addEventListener("change", () => toggleGroups(instance.name, input));
  cell.append(input, label);
  return cell;
}

async function toggleGroups(name, input) {
  const ignore = input.checked;
  input.disabled = true;
  setStatus(`Saving ${name}…`);
  try {
    const data = await graphql({
      token: state.token,
      query: SETTINGS_MUTATION,
      variables: { instance: name, ignore },
    });
    const saved = data.updateInstanceSettings;
    const instance = state.instances.find((item) => item.name === saved.name);
    if (instance) instance.ignoreGroupMessages = saved.ignoreGroupMessages;
    setStatus(`${name}: group messages ${saved.ignoreGroupMessages ? "ignored" : "counted"}.`);
    await refresh();
  } catch (error) {
    input.checked = !ignore;
    fail(error);
  } finally {
    input.disabled = false;
  }
}

function downloadCsv() {
  if (!state.series || !state.range) return;
  const blob = new Blob([seriesCsv(state.series.points)], { type: "text/csv;charset=utf-8" });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  const names = state.series.instances ? state.series.instances.join("_") : "instances";
  const safe = `${names}-${state.series.interval.toLowerCase()}-${dayValue(state.range.from)}`;
  link.download = `messages-${safe.replace(/[^A-Za-z0-9._-]+/g, "_")}.csv`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

function fail(error) {
  if (!(error instanceof ApiError)) {
    console.error(error);
    showError(new ApiError({ state: "error", code: null, message: String(error.message || error), status: null, retryAfter: null }));
    return;
  }
  showError(error);
  if (error.state === "unauthenticated") {
    $("main").hidden = true;
    $("token").focus();
  }
}

function showError(error) {
  stopCountdown();
  const box = $("message");
  box.dataset.state = error.state;
  const title = document.createElement("strong");
  title.textContent = TITLES[error.state] || TITLES.error;
  const text = document.createElement("p");
  text.textContent = error.message;
  box.replaceChildren(title, text);
  if (HINTS[error.state]) {
    const hint = document.createElement("p");
    hint.textContent = HINTS[error.state];
    box.append(hint);
  }
  if (error.retryAfter !== null && error.retryAfter !== undefined) startCountdown(box, error.retryAfter);
  box.hidden = false;
  setStatus("");
}

function startCountdown(box, seconds) {
  const line = document.createElement("p");
  const count = document.createElement("span");
  count.id = "retry-countdown";
  line.append("Retry in ", count, " s.");
  box.append(line);
  const until = Date.now() + seconds * 1000;
  $("refresh").disabled = true;
  const tick = () => {
    const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
    count.textContent = String(left);
    if (left > 0) return;
    stopCountdown();
    line.textContent = "You can retry now.";
  };
  state.countdown = setInterval(tick, 250);
  tick();
}

function stopCountdown() {
  if (state.countdown) clearInterval(state.countdown);
  state.countdown = null;
  $("refresh").disabled = false;
}

function clearMessage() {
  stopCountdown();
  const box = $("message");
  box.hidden = true;
  box.replaceChildren();
  delete box.dataset.state;
}

function cellOf(tag, text, scope, className) {
  const cell = document.createElement(tag);
  cell.textContent = text;
  if (scope) cell.scope = scope;
  if (className) cell.className = className;
  return cell;
}

function setStatus(text) {
  $("status").textContent = text;
}

init();
