// Times as the API sends them (RFC 3339, UTC), shown in the user's own time zone.

const timeOfDay = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  hour12: false,
});

const dateAndTime = new Intl.DateTimeFormat(undefined, {
  year: "numeric",
  month: "2-digit",
  day: "2-digit",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  hour12: false,
});

/** The user's time zone, as the browser reports it ("Europe/Berlin"). */
export function zone(): string {
  return Intl.DateTimeFormat().resolvedOptions().timeZone;
}

/** "14:03:07" in the user's zone; the date too when it is not today. */
export function shortTime(rfc3339: string, now = new Date()): string {
  const at = new Date(rfc3339);
  if (Number.isNaN(at.getTime())) return rfc3339;
  return at.toDateString() === now.toDateString() ? timeOfDay.format(at) : dateAndTime.format(at);
}

/** Seconds since the epoch, as the price chart's time axis takes them. */
export function epochSeconds(rfc3339: string): number {
  return Math.floor(new Date(rfc3339).getTime() / 1000);
}
