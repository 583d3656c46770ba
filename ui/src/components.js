// What every page shares: error notices that say what the API answered, a polling hook, the
// two-step kill button and small display pieces.

import { html } from 'htm/preact';
import { useEffect, useRef, useState } from 'preact/hooks';

const STATUS_TITLES = {
  0: 'The API did not answer',
  400: 'Invalid request (400)',
  401: 'Not authenticated (401)',
  403: 'Not allowed (403)',
  404: 'Not found (404)',
  409: 'Conflict (409)',
  413: 'Request too large (413)',
  429: 'Rate limited (429)',
  503: 'The API is unavailable (503)',
};

const STATUS_HINTS = {
  401: 'Set a bearer token in the identity box at the top of the page.',
  403: 'Only the job\u2019s creator or an admin may change it.',
};

/** An API error, shown so that a reader knows what was refused and why. */
export function ErrorNotice({ error, action }) {
  if (!error) return null;
  const status = error.status ?? -1;
  const title = STATUS_TITLES[status] || (status >= 500 ? `Server error (${status})` : `Error${status > 0 ? ` (${status})` : ''}`);
  const hint = STATUS_HINTS[status];
  return html`<div class="notice error" role="alert" data-status=${status}>
    <p><strong>${action ? `${action} failed: ` : ''}${title}</strong>${error.code ? html` <code>${error.code}</code>` : null}</p>
    <p class="message">${error.message}</p>
    ${error.details && error.details.length
      ? html`<ul class="details">
          ${error.details.map((d) => html`<li><code>${d.field}</code>: ${d.message}</li>`)}
        </ul>`
      : null}
    ${error.retryAfterSecs ? html`<p>Retry after ${error.retryAfterSecs} s.</p>` : null}
    ${hint ? html`<p class="hint">${hint}</p>` : null}
  </div>`;
}

export function SuccessNotice({ text }) {
  if (!text) return null;
  return html`<div class="notice ok" role="status">${text}</div>`;
}

/**
 * Loads `load(signal)` now and every `intervalMs` (when given) until the component goes away or
 * `deps` change. Keeps the last good value while a reload fails.
 */
export function usePolled(load, deps, intervalMs) {
  const [state, setState] = useState({ value: undefined, error: null, loading: true, at: 0 });
  const [generation, setGeneration] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;
  useEffect(() => {
    const controller = new AbortController();
    let timer;
    let stopped = false;
    const run = async () => {
      try {
        const value = await loadRef.current(controller.signal);
        if (stopped) return;
        setState({ value, error: null, loading: false, at: Date.now() });
      } catch (error) {
        if (stopped || (error && error.name === 'AbortError')) return;
        setState((previous) => ({ ...previous, error, loading: false }));
      }
      if (!stopped && intervalMs) timer = setTimeout(run, intervalMs);
    };
    setState((previous) => ({ ...previous, loading: true }));
    run();
    return () => {
      stopped = true;
      clearTimeout(timer);
      controller.abort();
    };
  }, [...deps, generation]);
  return { ...state, reload: () => setGeneration((g) => g + 1) };
}

/** A kill button that asks once more, then runs `onKill` and shows its outcome. */
export function KillButton({ label, question, onKill, disabled, children }) {
  const [phase, setPhase] = useState('idle');
  const [error, setError] = useState(null);
  const [done, setDone] = useState('');
  const confirm = async () => {
    setPhase('busy');
    setError(null);
    try {
      setDone(await onKill());
    } catch (e) {
      setError(e);
    }
    setPhase('idle');
  };
  return html`<div class="kill">
    ${phase === 'idle'
      ? html`<button type="button" class="danger" disabled=${disabled} onClick=${() => {
          setDone('');
          setError(null);
          setPhase('confirm');
        }}>${label}</button>`
      : null}
    ${phase === 'confirm'
      ? html`<div class="confirm" role="group" aria-label=${`Confirm: ${label}`}>
          <p>${question}</p>
          ${children}
          <button type="button" class="danger" onClick=${confirm}>Yes, ${label.toLowerCase()}</button>
          <button type="button" onClick=${() => setPhase('idle')}>Cancel</button>
        </div>`
      : null}
    ${phase === 'busy' ? html`<p role="status">Sending the kill\u2026</p>` : null}
    <${ErrorNotice} error=${error} action=${label} />
    <${SuccessNotice} text=${done} />
  </div>`;
}

export const State = ({ state, reason }) =>
  html`<span class=${`state state-${String(state || '').toLowerCase()}`} data-state=${state}>${state}</span>${reason
    ? html` <span class="reason">(${reason})</span>`
    : null}`;

export const Mono = ({ children }) => html`<code class="id">${children}</code>`;

export const Loading = ({ what }) => html`<p role="status" class="loading">Loading ${what}\u2026</p>`;

/** The age of a page's data, so a reader sees it is live. */
export const Freshness = ({ at, error }) =>
  at ? html`<p class="freshness">Updated ${new Date(at).toLocaleTimeString()}${error ? ' (the last refresh failed)' : ''}</p>` : null;
