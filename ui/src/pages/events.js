// The live event feed: a long poll of GET /api/v3/events (waitMs 20 s) that always resumes
// from the cursor of the previous answer, so nothing is missed between polls, filtered by job
// and by event type.

import { html } from 'htm/preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { api } from '../api.js';
import { ErrorNotice } from '../components.js';
import { time } from '../format.js';
import { jobHref, navigate, taskHref } from '../router.js';

const TYPES = ['JobStateChange', 'JobCapacityChange', 'JobAttributesChange', 'TaskStateChange', 'PlacementFailure', 'AgentStateChange'];
const STARTS = [
  ['now', 'now', 0],
  ['10m', 'the last 10 minutes', 10 * 60e3],
  ['1h', 'the last hour', 3600e3],
  ['1d', 'the last day', 86400e3],
];
const WAIT_MS = 20000;
const KEPT = 500;

function filtersOf(params) {
  const types = (params.get('types') || '').split(',').filter((t) => TYPES.includes(t));
  const since = params.get('since') || '10m';
  return {
    jobId: (params.get('jobId') || '').trim(),
    types,
    since: STARTS.some(([key]) => key === since) ? since : '10m',
  };
}

export function EventsPage({ params }) {
  const filters = filtersOf(params);
  const [paused, setPaused] = useState(false);
  const feed = useFeed(filters, paused);
  return html`<section aria-labelledby="events-title">
    <h1 id="events-title">Events</h1>
    <${EventFilters} filters=${filters} />
    <p class="feed-status" role="status" id="feed-status">${feed.status}</p>
    <button type="button" onClick=${() => setPaused(!paused)}>${paused ? 'Resume the feed' : 'Pause the feed'}</button>
    <${ErrorNotice} error=${feed.error} action="Reading the event feed" />
    ${feed.events.length
      ? html`<table class="events">
          <caption class="visually-hidden">Events, newest first</caption>
          <thead>
            <tr>
              <th scope="col">Time</th>
              <th scope="col">Type</th>
              <th scope="col">Job</th>
              <th scope="col">Task</th>
              <th scope="col">State</th>
              <th scope="col">Reason</th>
              <th scope="col">Agent</th>
              <th scope="col">Detail</th>
            </tr>
          </thead>
          <tbody>
            ${feed.events.map(
              (event) => html`<tr key=${event.id} data-event-type=${event.type} data-job-id=${event.jobId || ''}>
                <td>${time(event.timestampMs)}</td>
                <td>${event.type}</td>
                <td>${event.jobId ? html`<a href=${jobHref(event.jobId)}><code class="id">${event.jobId}</code></a>` : ''}</td>
                <td>${event.taskId ? html`<a href=${taskHref(event.taskId)}><code class="id">${event.taskId}</code></a>` : ''}</td>
                <td>${event.state ? html`<span class=${`state state-${event.state.toLowerCase()}`} data-state=${event.state}>${event.state}</span>` : ''}</td>
                <td>${event.reasonCode || ''}</td>
                <td>${event.agentId || ''}</td>
                <td>${detailOf(event)}</td>
              </tr>`,
            )}
          </tbody>
        </table>`
      : html`<p class="empty">No events yet${filters.since === 'now' ? ' since the feed was opened' : ''}.</p>`}
  </section>`;
}

function detailOf(event) {
  if (event.capacity) return `capacity min ${event.capacity.min ?? 0}, desired ${event.capacity.desired}, max ${event.capacity.max}`;
  if (event.placement) return `${event.placement.unplacedTasks} unplaced: ${event.placement.reasons.join('; ')}`;
  if (event.attributes) return Object.entries(event.attributes).map(([k, v]) => `${k}=${v}`).join(', ');
  return event.reasonMessage || '';
}

/**
 * The long-poll loop: one request at a time, each from the previous answer's cursor, with a
 * backoff on errors. The page is mounted afresh for other filters, so the loop's position only
 * ever belongs to these.
 */
function useFeed(filters, paused) {
  const [feed, setFeed] = useState({ events: [], status: 'Connecting\u2026', error: null });
  const position = useRef(null);
  const openedAtMs = useRef(Date.now());

  useEffect(() => {
    if (paused) {
      setFeed((f) => ({ ...f, status: 'Paused; resuming goes on from where the feed stopped.' }));
      return undefined;
    }
    const controller = new AbortController();
    let stopped = false;
    const back = STARTS.find(([k]) => k === filters.since)[2];
    const sinceMs = openedAtMs.current - back;
    (async () => {
      let backoffMs = 1000;
      while (!stopped) {
        try {
          const answer = await api('events', {
            signal: controller.signal,
            query: {
              jobId: filters.jobId,
              types: filters.types,
              limit: 200,
              waitMs: WAIT_MS,
              ...(position.current ? { cursor: position.current } : { sinceMs }),
            },
          });
          if (stopped) return;
          position.current = answer.cursor;
          backoffMs = 1000;
          setFeed((f) => ({
            events: merge(answer.events, f.events),
            status: `Live: following the feed${filters.jobId ? ` of job ${filters.jobId}` : ''} (last answer ${new Date().toLocaleTimeString()}).`,
            error: null,
          }));
        } catch (error) {
          if (stopped || (error && error.name === 'AbortError')) return;
          // A refused filter or missing credentials will not get better by asking again.
          const fatal = [400, 401, 403, 404].includes(error.status);
          setFeed((f) => ({
            ...f,
            error,
            status: fatal
              ? 'Stopped: fix the problem below, then apply the filters again.'
              : `Retrying in ${Math.round(backoffMs / 1000)} s\u2026`,
          }));
          if (fatal) return;
          await sleep(error.retryAfterSecs ? error.retryAfterSecs * 1000 : backoffMs, controller.signal);
          backoffMs = Math.min(backoffMs * 2, 15000);
        }
      }
    })();
    return () => {
      stopped = true;
      controller.abort();
    };
  }, [paused]);
  return feed;
}

/** Newest first, each event once (the feed delivers at least once; an id is the same change). */
function merge(arrived, shown) {
  const seen = new Set(shown.map((e) => e.id));
  const fresh = arrived.filter((e) => !seen.has(e.id) && seen.add(e.id));
  if (!fresh.length) return shown;
  return [...fresh.reverse(), ...shown].slice(0, KEPT);
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

function EventFilters({ filters }) {
  const [draft, setDraft] = useState({ ...filters });
  const submit = (event) => {
    event.preventDefault();
    navigate('/events', { jobId: draft.jobId.trim(), types: draft.types.join(','), since: draft.since === '10m' ? '' : draft.since });
  };
  const toggle = (type) => (event) =>
    setDraft({ ...draft, types: event.currentTarget.checked ? [...draft.types, type] : draft.types.filter((t) => t !== type) });
  return html`<form class="filters" onSubmit=${submit} aria-label="Filter events">
    <label>Job ID
      <input name="jobId" type="text" size="38" value=${draft.jobId} onInput=${(e) => setDraft({ ...draft, jobId: e.currentTarget.value })} />
    </label>
    <fieldset>
      <legend>Types (none checked: all)</legend>
      ${TYPES.map(
        (type) => html`<label class="inline"><input type="checkbox" name="types" value=${type} checked=${draft.types.includes(type)} onChange=${toggle(type)} /> ${type}</label>`,
      )}
    </fieldset>
    <label>Starting from
      <select name="since" value=${draft.since} onChange=${(e) => setDraft({ ...draft, since: e.currentTarget.value })}>
        ${STARTS.map(([value, label]) => html`<option value=${value}>${label}</option>`)}
      </select>
    </label>
    <button type="submit">Apply filters</button>
  </form>`;
}
