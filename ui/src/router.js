// Hash routing: `#/jobs?state=Accepted`, `#/jobs/{id}`, `#/tasks/{id}`, `#/agents`, `#/events`.
// The page itself is always /ui/, so the server serves one document and links survive reloads.

import { useEffect, useState } from 'preact/hooks';

export function currentRoute() {
  const raw = window.location.hash.replace(/^#/, '') || '/jobs';
  const at = raw.indexOf('?');
  const path = at < 0 ? raw : raw.slice(0, at);
  const params = new URLSearchParams(at < 0 ? '' : raw.slice(at + 1));
  return { path: path.replace(/\/+$/, '') || '/jobs', params, raw };
}

/** `#/path?query` with the empty query values left out. */
export function href(path, query) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== '') params.set(name, String(value));
  }
  const search = params.toString();
  return `#${path}${search ? `?${search}` : ''}`;
}

export function navigate(path, query) {
  window.location.hash = href(path, query);
}

export function useRoute() {
  const [route, setRoute] = useState(currentRoute);
  useEffect(() => {
    const changed = () => setRoute(currentRoute());
    window.addEventListener('hashchange', changed);
    return () => window.removeEventListener('hashchange', changed);
  }, []);
  return route;
}

export const jobHref = (id) => `#/jobs/${encodeURIComponent(id)}`;
export const taskHref = (id) => `#/tasks/${encodeURIComponent(id)}`;
