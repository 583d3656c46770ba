// The jobs list: filters (state, owner, application, type) kept in the address, and pages
// followed through the API's cursor.

import { html } from 'htm/preact';
import { useState } from 'preact/hooks';
import { api } from '../api.js';
import { ErrorNotice, Freshness, Loading, Mono, State, usePolled } from '../components.js';
import { jobType, sizeOf, time } from '../format.js';
import { jobHref, navigate } from '../router.js';

const JOB_STATES = ['Accepted', 'KillInitiated', 'Finished'];
const PAGE_SIZES = [25, 50, 100, 200];

function filtersOf(params) {
  return {
    state: params.get('state') || '',
    owner: params.get('owner') || '',
    app: params.get('app') || '',
    type: params.get('type') || '',
    pageSize: Math.min(1000, Math.max(1, Number(params.get('pageSize')) || 25)),
  };
}

export function JobsPage({ params }) {
  const filters = filtersOf(params);
  const key = JSON.stringify(filters);
  // The cursors of the pages seen so far: [undefined (the first page), page 2's, ...].
  const [paging, setPaging] = useState({ key, cursors: [undefined], index: 0 });
  const current = paging.key === key ? paging : { key, cursors: [undefined], index: 0 };
  const cursor = current.cursors[current.index];

  const page = usePolled(
    (signal) =>
      api('jobs', {
        signal,
        query: {
          jobState: filters.state,
          owner: filters.owner,
          applicationName: filters.app,
          jobType: filters.type,
          pageSize: filters.pageSize,
          cursor,
        },
      }),
    [key, cursor],
    5000,
  );

  const next = () => {
    const nextCursor = page.value && page.value.pagination.cursor;
    if (!nextCursor) return;
    const cursors = current.cursors.slice(0, current.index + 1);
    cursors.push(nextCursor);
    setPaging({ key, cursors, index: current.index + 1 });
  };
  const previous = () => setPaging({ ...current, index: Math.max(0, current.index - 1) });
  const first = () => setPaging({ key, cursors: [undefined], index: 0 });

  return html`<section aria-labelledby="jobs-title">
    <h1 id="jobs-title">Jobs</h1>
    <${JobFilters} filters=${filters} />
    <${ErrorNotice} error=${page.error} action="Listing jobs" />
    ${page.value === undefined && page.loading ? html`<${Loading} what="jobs" />` : null}
    ${page.value
      ? html`<${JobTable} jobs=${page.value.items} />
          <nav class="pager" aria-label="Pages of jobs">
            <button type="button" onClick=${first} disabled=${current.index === 0}>First page</button>
            <button type="button" onClick=${previous} disabled=${current.index === 0}>Previous page</button>
            <span>Page ${current.index + 1}</span>
            <button type="button" onClick=${next} disabled=${!page.value.pagination.hasMore}>Next page</button>
          </nav>
          <${Freshness} at=${page.at} error=${page.error} />`
      : null}
  </section>`;
}

function JobFilters({ filters }) {
  const [draft, setDraft] = useState(filters);
  const field = (name) => (event) => setDraft({ ...draft, [name]: event.currentTarget.value });
  const submit = (event) => {
    event.preventDefault();
    navigate('/jobs', { ...draft, pageSize: draft.pageSize === 25 ? '' : draft.pageSize });
  };
  const clear = () => {
    setDraft({ state: '', owner: '', app: '', type: '', pageSize: 25 });
    navigate('/jobs');
  };
  return html`<form class="filters" onSubmit=${submit} aria-label="Filter jobs">
    <label>State
      <select name="state" value=${draft.state} onChange=${field('state')}>
        <option value="">any</option>
        ${JOB_STATES.map((s) => html`<option value=${s}>${s}</option>`)}
      </select>
    </label>
    <label>Owner (team email)
      <input name="owner" type="text" value=${draft.owner} onInput=${field('owner')} />
    </label>
    <label>Application
      <input name="app" type="text" value=${draft.app} onInput=${field('app')} />
    </label>
    <label>Type
      <select name="type" value=${draft.type} onChange=${field('type')}>
        <option value="">any</option>
        <option value="batch">batch</option>
        <option value="service">service</option>
      </select>
    </label>
    <label>Per page
      <select name="pageSize" value=${String(draft.pageSize)} onChange=${(e) => setDraft({ ...draft, pageSize: Number(e.currentTarget.value) })}>
        ${(PAGE_SIZES.includes(draft.pageSize) ? PAGE_SIZES : [draft.pageSize, ...PAGE_SIZES].sort((a, b) => a - b)).map(
          (n) => html`<option value=${String(n)}>${n}</option>`,
        )}
      </select>
    </label>
    <button type="submit">Apply filters</button>
    <button type="button" onClick=${clear}>Clear filters</button>
  </form>`;
}

function JobTable({ jobs }) {
  if (!jobs.length) return html`<p class="empty">No jobs match these filters.</p>`;
  return html`<table class="jobs">
    <caption class="visually-hidden">Jobs, newest first</caption>
    <thead>
      <tr>
        <th scope="col">Job</th>
        <th scope="col">Application</th>
        <th scope="col">Type</th>
        <th scope="col">Owner</th>
        <th scope="col">State</th>
        <th scope="col">Size</th>
        <th scope="col">Created by</th>
        <th scope="col">Created</th>
      </tr>
    </thead>
    <tbody>
      ${jobs.map(
        (job) => html`<tr key=${job.id} data-job-id=${job.id}>
          <td><a href=${jobHref(job.id)}><${Mono}>${job.id}<//></a></td>
          <td>${job.jobDescriptor.applicationName}</td>
          <td>${jobType(job)}</td>
          <td>${job.jobDescriptor.owner.teamEmail}</td>
          <td><${State} state=${job.status.state} reason=${job.status.state === 'Accepted' ? '' : job.status.reasonCode} /></td>
          <td>${sizeOf(job)}</td>
          <td>${job.createdBy}</td>
          <td>${time(job.createdAtMs)}</td>
        </tr>`,
      )}
    </tbody>
  </table>`;
}
