// The series as CSV, built in the browser from the data already shown.

const COUNTS = [
  "totalMessages",
  "messagesSent",
  "messagesReceived",
  "groupMessages",
  "individualMessages",
  "messagesWithMedia",
];

/** CSV text: one row per point, the keys of every point's lists as columns. */
export function seriesCsv(points) {
  const typeKeys = keysOf(points, "messagesByType");
  const statusKeys = keysOf(points, "messagesByStatus");
  const header = [
    "start",
    "end",
    ...COUNTS,
    ...typeKeys.map((key) => `byType.${key}`),
    ...statusKeys.map((key) => `byStatus.${key}`),
  ];
  const rows = points.map((point) => {
    const byType = counts(point.messagesByType);
    const byStatus = counts(point.messagesByStatus);
    return [
      point.start,
      point.end,
      ...COUNTS.map((field) => point[field]),
      ...typeKeys.map((key) => byType.get(key) || 0),
      ...statusKeys.map((key) => byStatus.get(key) || 0),
    ];
  });
  return [header, ...rows].map((row) => row.map(cell).join(",")).join("\r\n") + "\r\n";
}

function keysOf(points, field) {
  const keys = [];
  for (const point of points) {
    for (const { key } of point[field]) if (!keys.includes(key)) keys.push(key);
  }
  return keys;
}

function counts(list) {
  return new Map(list.map(({ key, count }) => [key, count]));
}

/** One CSV cell: quoted when needed; text a spreadsheet would run as a formula is defused. */
function cell(value) {
  let text = String(value);
  if (typeof value === "string" && /^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}
