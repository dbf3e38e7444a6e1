// GraphQL over POST /graphql with the `token` header, and the errors a person can act on.

/** Error codes of the API (extensions.code) and the dashboard state each one shows. */
const STATE_OF_CODE = {
  UNAUTHENTICATED: "unauthenticated",
  FORBIDDEN: "forbidden",
  NOT_FOUND: "not-found",
  RATE_LIMITED: "rate-limited",
  UNAVAILABLE: "unavailable",
  BAD_USER_INPUT: "bad-input",
};

/** The code of an answer without a GraphQL body (a proxy's page, say), from its status. */
const CODE_OF_STATUS = {
  400: "BAD_USER_INPUT",
  401: "UNAUTHENTICATED",
  403: "FORBIDDEN",
  404: "NOT_FOUND",
  429: "RATE_LIMITED",
  502: "UNAVAILABLE",
  503: "UNAVAILABLE",
  504: "UNAVAILABLE",
};

export class ApiError extends Error {
  /**
   * @param {{state: string, code: string|null, message: string, status: number|null,
   *          retryAfter: number|null}} details
   */
  constructor({ state, code, message, status, retryAfter }) {
    super(message);
    this.state = state;
    this.code = code;
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/**
 * Run one GraphQL operation; resolves to its `data`, or rejects with an ApiError.
 * @param {{token: string, query: string, variables?: object, signal?: AbortSignal}} request
 */
export async function graphql({ token, query, variables = {}, signal }) {
  let response;
  try {
    response = await fetch("/graphql", {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json", token },
      body: JSON.stringify({ query, variables }),
      credentials: "same-origin",
      cache: "no-store",
      signal,
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError({
      state: "network",
      code: null,
      message: "The service did not answer (is it running?).",
      status: null,
      retryAfter: null,
    });
  }
  const body = await response.json().catch(() => null);
  const errors = (body && body.errors) || [];
  if (response.ok && errors.length === 0 && body && body.data) return body.data;
  const first = errors[0] || {};
  const code = (first.extensions && first.extensions.code) || CODE_OF_STATUS[response.status] || null;
  throw new ApiError({
    state: STATE_OF_CODE[code] || "error",
    code,
    message: first.message || `The service answered ${response.status}.`,
    status: response.status,
    retryAfter: retryAfterSeconds(response.headers),
  });
}

/** Seconds until a retry may help: `Retry-After` (seconds or a date), else the reset time. */
export function retryAfterSeconds(headers, now = Date.now()) {
  const value = headers.get("retry-after");
  if (value) {
    if (/^\d+$/.test(value.trim())) return Number(value.trim());
    const date = Date.parse(value);
    if (!Number.isNaN(date)) return Math.max(0, Math.ceil((date - now) / 1000));
  }
  const reset = headers.get("x-ratelimit-reset");
  if (reset && /^\d+$/.test(reset.trim()) && headers.get("x-ratelimit-remaining") === "0") {
    return Math.max(0, Math.ceil(Number(reset) - now / 1000));
  }
  return null;
}
