// Ranges in the browser's timezone: whole local days, half-open [from, to).

export const timeZone = Intl.DateTimeFormat().resolvedOptions().timeZone;

const MAX_POINTS = 1000;

/** Local midnight of the day `days` after the day of `date` (DST-safe: calendar days). */
export function localMidnight(date, days = 0) {
  return new Date(date.getFullYear(), date.getMonth(), date.getDate() + days);
}

/** A preset: "today", or the last N days ("7", "30", "90") ending with today. */
export function presetRange(preset, now = new Date()) {
  const days = preset === "today" ? 1 : Number(preset);
  if (!Number.isInteger(days) || days < 1) throw new RangeError(`unknown range ${preset}`);
  const to = localMidnight(now, 1);
  return { from: localMidnight(now, 1 - days), to, days };
}

/** A custom range from two `<input type="date">` values, both days included. */
export function customRange(fromValue, toValue) {
  const from = parseDay(fromValue);
  const last = parseDay(toValue);
  if (!from || !last) return { error: "Pick both days of the custom range." };
  if (last < from) return { error: "The range ends before it starts." };
  const to = localMidnight(last, 1);
  return { from, to, days: Math.round((to - from) / 86400000) };
}

/** HOUR up to 7 days, else DAY (else WEEK, MONTH: at most 1,000 points a series). */
export function intervalFor({ days }) {
  if (days <= 7) return "HOUR";
  if (days <= MAX_POINTS) return "DAY";
  if (days / 7 < MAX_POINTS - 1) return "WEEK";
  return "MONTH";
}

/** `YYYY-MM-DD` of a local date, for date inputs. */
export function dayValue(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

function parseDay(value) {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value || "");
  if (!match) return null;
  return new Date(Number(match[1]), Number(match[2]) - 1, Number(match[3]));
}
