// Chart.js (vendored, loaded as the global `Chart`) drawing the series and the key counts.

const SENT = "#1f6feb";
const RECEIVED = "#1a7f37";
const BAR = "#8250df";

const charts = new Map();

const DAY = { month: "short", day: "numeric" };
const HOUR = { hour: "2-digit", minute: "2-digit" };
const LABEL_FORMATS = {
  DAY,
  WEEK: { year: "numeric", month: "short", day: "numeric" },
  MONTH: { year: "numeric", month: "short" },
};

/** A point's label in `timeZone`: two lines (day, time) for hours, else one. */
function labeller(interval, timeZone) {
  if (interval === "HOUR") {
    const day = new Intl.DateTimeFormat(undefined, { ...DAY, timeZone });
    const time = new Intl.DateTimeFormat(undefined, { ...HOUR, timeZone });
    return (date) => [day.format(date), time.format(date)];
  }
  const format = new Intl.DateTimeFormat(undefined, { ...LABEL_FORMATS[interval], timeZone });
  return (date) => format.format(date);
}

/** The line chart of sent and received messages per point of the series. */
export function drawSeries(canvas, series, timeZone) {
  const label = labeller(series.interval, timeZone);
  const labels = series.points.map((point) => label(new Date(point.start)));
  draw(canvas, {
    type: "line",
    data: {
      labels,
      datasets: [
        line("Sent", series.points.map((point) => point.messagesSent), SENT),
        line("Received", series.points.map((point) => point.messagesReceived), RECEIVED),
      ],
    },
    options: {
      ...common(),
      interaction: { mode: "index", intersect: false },
      scales: {
        x: { ticks: { maxRotation: 0, autoSkip: true, autoSkipPadding: 16 } },
        y: { beginAtZero: true, ticks: { precision: 0 } },
      },
    },
  });
}

/** A bar chart of a key/count list (messages by type, status or media type). */
export function drawBars(canvas, keyCounts, label) {
  draw(canvas, {
    type: "bar",
    data: {
      labels: keyCounts.map(({ key }) => key),
      datasets: [
        { label, data: keyCounts.map(({ count }) => count), backgroundColor: BAR, borderRadius: 3 },
      ],
    },
    options: {
      ...common(),
      plugins: { legend: { display: false } },
      scales: {
        x: { ticks: { autoSkip: false, maxRotation: 60 } },
        y: { beginAtZero: true, ticks: { precision: 0 } },
      },
    },
  });
}

function line(label, data, color) {
  return {
    label,
    data,
    borderColor: color,
    backgroundColor: color,
    borderWidth: 2,
    pointRadius: data.length > 60 ? 0 : 2,
    tension: 0.2,
  };
}

function common() {
  return { animation: false, responsive: true, maintainAspectRatio: false };
}

function draw(canvas, config) {
  const existing = charts.get(canvas);
  if (existing) existing.destroy();
  charts.set(canvas, new Chart(canvas, config));
}
