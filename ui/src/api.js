// The one way the dashboard reaches the API: same origin, relative to the page (so a path
// prefix in front, such as an API Gateway stage, is kept), JSON in and out, and the bearer
// token of the identity box when one is set. Without a token no Authorization header is sent,
// so that a signing proxy in front can authenticate the request instead.

const TOKEN_KEY = 'titus.token';

export function loadToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return '';
  }
}

export function storeToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage refused (a private window's quota): the token lives for this page only.
  }
}

// The page is served at {prefix}/ui/; the API lives at {prefix}/api/v3/.
const apiBase = () => new URL('../api/v3/', document.baseURI);

/** An answer other than 2xx, or no answer at all (`status` 0). */
export class ApiError extends Error {
  constructor(status, body, text, retryAfterSecs) {
    super(
      (body && typeof body.message === 'string' && body.message) ||
        text ||
        `the API answered ${status}`,
    );
    this.name = 'ApiError';
    this.status = status;
    this.code = (body && body.error) || '';
    this.details = (body && Array.isArray(body.details) && body.details) || [];
    this.retryAfterSecs = retryAfterSecs;
  }
}

/**
 * Calls `path` under /api/v3 and returns its JSON. `query` entries that are empty are left out;
 * arrays are sent comma-separated, as the API's list parameters expect.
 */
export async function api(path, { method = 'GET', query, body, signal, token } = {}) {
  const url = new URL(path, apiBase());
  for (const [name, value] of Object.entries(query || {})) {
    if (value === undefined || value === null || value === '') continue;
    if (Array.isArray(value)) {
      if (value.length) url.searchParams.set(name, value.join(','));
    } else {
      url.searchParams.set(name, String(value));
    }
  }
  const headers = { accept: 'application/json' };
  const bearer = token === undefined ? loadToken() : token;
  if (bearer) headers.authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      credentials: 'same-origin',
      cache: 'no-store',
    });
  } catch (error) {
    if (error && error.name === 'AbortError') throw error;
    throw new ApiError(0, null, `the API did not answer (${error && error.message})`);
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!response.ok) {
    const retryAfter = Number(response.headers.get('retry-after'));
    throw new ApiError(
      response.status,
      json,
      text.slice(0, 500),
      Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : undefined,
    );
  }
  return json;
}

/** Every page of a list route, up to `max` items. */
export async function listAll(path, query, { signal, max = 1000 } = {}) {
  const items = [];
  let cursor;
  for (;;) {
    const page = await api(path, { query: { ...query, pageSize: 1000, cursor }, signal });
    items.push(...page.items);
    if (!page.pagination.hasMore || !page.pagination.cursor || items.length >= max) {
      return { items, truncated: page.pagination.hasMore };
    }
    cursor = page.pagination.cursor;
  }
}
