// One job: its descriptor, capacity, tasks with their states, why pending tasks wait, and the
// kill and scale actions (the API decides who may; its refusals are shown as they come).

import { html } from 'htm/preact';
import { useState } from 'preact/hooks';
import { api, listAll } from '../api.js';
import { ErrorNotice, Freshness, KillButton, Loading, Mono, State, SuccessNotice, usePolled } from '../components.js';
import { commandOf, countStates, imageOf, jobType, time } from '../format.js';
import { href, taskHref } from '../router.js';
import { Placement } from './task.js';

const REFRESH_MS = 2000;

export function JobPage({ id }) {
  const data = usePolled(
    async (signal) => {
      const [job, tasks] = await Promise.all([
        api(`jobs/${encodeURIComponent(id)}`, { signal }),
        listAll('tasks', { jobId: id }, { signal }),
      ]);
      const waiting = tasks.items.some((t) => t.status.state === 'Accepted');
      let placement = null;
      if (waiting && job.status.state === 'Accepted') {
        placement = await api(`scheduler/results/${encodeURIComponent(id)}`, { signal }).catch((error) =>
          error && error.name === 'AbortError' ? Promise.reject(error) : { error },
        );
      }
      return { job, tasks, placement };
    },
    [id],
    REFRESH_MS,
  );

  if (data.value === undefined) {
    return html`<section aria-labelledby="job-title">
      <h1 id="job-title">Job <${Mono}>${id}<//></h1>
      <${ErrorNotice} error=${data.error} action="Reading the job" />
      ${data.loading ? html`<${Loading} what="the job" />` : null}
    </section>`;
  }
  const { job, tasks, placement } = data.value;
  const descriptor = job.jobDescriptor;
  const finished = job.status.state === 'Finished';
  return html`<section aria-labelledby="job-title">
    <h1 id="job-title">Job <${Mono}>${job.id}<//></h1>
    <${ErrorNotice} error=${data.error} action="Refreshing the job" />
    <${Freshness} at=${data.at} error=${data.error} />
    <p><a href=${href('/events', { jobId: job.id, since: '1d' })}>This job's events</a></p>
    <div class="columns">
      <section aria-labelledby="summary-title">
        <h2 id="summary-title">Descriptor</h2>
        <dl class="summary">
          <dt>Application</dt><dd>${descriptor.applicationName}</dd>
          <dt>Owner</dt><dd>${descriptor.owner.teamEmail}</dd>
          <dt>Type</dt><dd>${jobType(job)}</dd>
          <dt>State</dt>
          <dd id="job-state"><${State} state=${job.status.state} reason=${job.status.reasonCode} />${job.status.reasonMessage
            ? html` — ${job.status.reasonMessage}`
            : null}</dd>
          <dt>Created by</dt><dd>${job.createdBy}</dd>
          <dt>Created</dt><dd>${time(job.createdAtMs)}</dd>
          <dt>Image</dt><dd><code>${imageOf(descriptor)}</code></dd>
          <dt>Command</dt><dd><code>${commandOf(descriptor)}</code></dd>
          <dt>Resources</dt><dd>${resourcesOf(descriptor.container.resources)}</dd>
          <dt>Capacity group</dt><dd>${descriptor.capacityGroup || 'DEFAULT'}</dd>
          ${Object.keys(descriptor.attributes || {}).length
            ? html`<dt>Attributes</dt><dd>${Object.entries(descriptor.attributes).map(([k, v]) => html`<code>${k}=${v}</code> `)}</dd>`
            : null}
        </dl>
      </section>
      <section aria-labelledby="capacity-title">
        <h2 id="capacity-title">Capacity</h2>
        <${Capacity} job=${job} />
        ${descriptor.service && !finished ? html`<${ScaleForm} job=${job} onDone=${data.reload} />` : null}
        <h2>Kill</h2>
        <${KillButton}
          label="Kill job"
          disabled=${finished}
          question=${`Kill job ${job.id}? Each task gets SIGTERM, then SIGKILL after its grace period.`}
          onKill=${async () => {
            const killed = await api(`jobs/${encodeURIComponent(job.id)}`, { method: 'DELETE' });
            data.reload();
            return `Kill requested: the job is ${killed.status.state}.`;
          }}
        />
      </section>
    </div>
    ${placement ? html`<section aria-labelledby="placement-title">
      <h2 id="placement-title">Why tasks wait</h2>
      <${Placement} result=${placement} />
    </section>` : null}
    <section aria-labelledby="tasks-title">
      <h2 id="tasks-title">Tasks</h2>
      <p id="task-counts">${tasks.items.length} task${tasks.items.length === 1 ? '' : 's'}${tasks.items.length
        ? `: ${countStates(tasks.items)}`
        : ''}${tasks.truncated ? ' (the first 1000 shown)' : ''}</p>
      <${TaskTable} tasks=${tasks.items} />
    </section>
  </section>`;
}

function resourcesOf(r = {}) {
  const parts = [`${r.cpu ?? 1} CPU`, `${r.memoryMB ?? 512} MB memory`, `${r.diskMB ?? 10000} MB disk`, `${r.networkMbps ?? 128} Mbps`];
  if (r.gpu) parts.push(`${r.gpu} GPU`);
  return parts.join(', ');
}

function Capacity({ job }) {
  const descriptor = job.jobDescriptor;
  if (descriptor.batch) {
    const batch = descriptor.batch;
    return html`<dl class="summary">
      <dt>Batch size</dt><dd>${batch.size ?? 1}</dd>
      <dt>Runtime limit</dt><dd>${batch.runtimeLimitSec ? `${batch.runtimeLimitSec} s` : 'the default (5 days)'}</dd>
      <dt>Retry policy</dt><dd><code>${JSON.stringify(batch.retryPolicy || {})}</code></dd>
    </dl>`;
  }
  const service = descriptor.service;
  const capacity = service.capacity;
  return html`<dl class="summary" id="capacity">
    <dt>Min</dt><dd>${capacity.min ?? 0}</dd>
    <dt>Desired</dt><dd id="capacity-desired">${capacity.desired}</dd>
    <dt>Max</dt><dd>${capacity.max}</dd>
    <dt>Enabled</dt><dd>${service.enabled === false ? 'no' : 'yes'}</dd>
  </dl>`;
}

function ScaleForm({ job, onDone }) {
  const capacity = job.jobDescriptor.service.capacity;
  const [draft, setDraft] = useState({ min: '', desired: String(capacity.desired), max: '' });
  const [error, setError] = useState(null);
  const [done, setDone] = useState('');
  const [busy, setBusy] = useState(false);
  const field = (name) => (event) => setDraft({ ...draft, [name]: event.currentTarget.value });
  const submit = async (event) => {
    event.preventDefault();
    setError(null);
    setDone('');
    const body = {};
    for (const name of ['min', 'desired', 'max']) {
      const text = draft[name].trim();
      // Sent as typed; the API checks it and names the field it refuses.
      if (text !== '') body[name] = Number.isFinite(Number(text)) ? Number(text) : text;
    }
    setBusy(true);
    try {
      const scaled = await api(`jobs/${encodeURIComponent(job.id)}/instances`, { method: 'PUT', body });
      const c = scaled.jobDescriptor.service.capacity;
      setDone(`Capacity is now min ${c.min ?? 0}, desired ${c.desired}, max ${c.max}.`);
      onDone();
    } catch (e) {
      setError(e);
    }
    setBusy(false);
  };
  return html`<form class="scale" onSubmit=${submit} aria-label="Scale the job">
    <h3>Scale</h3>
    <p class="hint">Empty fields keep their current value.</p>
    <label>Min <input name="min" inputmode="numeric" placeholder=${String(capacity.min ?? 0)} value=${draft.min} onInput=${field('min')} /></label>
    <label>Desired <input name="desired" inputmode="numeric" value=${draft.desired} onInput=${field('desired')} /></label>
    <label>Max <input name="max" inputmode="numeric" placeholder=${String(capacity.max)} value=${draft.max} onInput=${field('max')} /></label>
    <button type="submit" disabled=${busy}>Scale</button>
    <${ErrorNotice} error=${error} action="Scaling" />
    <${SuccessNotice} text=${done} />
  </form>`;
}

function TaskTable({ tasks }) {
  if (!tasks.length) return html`<p class="empty">No tasks yet: the scheduler writes a new job's tasks on its next tick.</p>`;
  return html`<table class="tasks">
    <thead>
      <tr>
        <th scope="col">Task</th>
        <th scope="col">Index</th>
        <th scope="col">State</th>
        <th scope="col">Agent</th>
        <th scope="col">Started</th>
        <th scope="col">Last change</th>
        <th scope="col">Message</th>
      </tr>
    </thead>
    <tbody>
      ${tasks.map(
        (task) => html`<tr key=${task.id} data-task-id=${task.id}>
          <td><a href=${taskHref(task.id)}><${Mono}>${task.id}<//></a>${task.resubmitNumber ? html` <span class="reason">(resubmit ${task.resubmitNumber})</span>` : null}</td>
          <td>${task.index}</td>
          <td><${State} state=${task.status.state} reason=${task.status.reasonCode} /></td>
          <td>${task.agentId || '—'}</td>
          <td>${time(task.startedAtMs)}</td>
          <td>${time(task.status.timestampMs)}</td>
          <td>${task.status.reasonMessage || ''}</td>
        </tr>`,
      )}
    </tbody>
  </table>`;
}
