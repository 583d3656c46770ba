// One task: where it runs, its status history, the scheduler's answer while it waits (or where
// it was placed), its output (GET /api/v3/tasks/{id}/logs, followed while it runs), and kill
// (with shrink for a service's task).

import { html } from 'htm/preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { api } from '../api.js';
import { ErrorNotice, Freshness, KillButton, Loading, Mono, State, usePolled } from '../components.js';
import { time } from '../format.js';
import { jobHref, taskHref } from '../router.js';

const REFRESH_MS = 2000;

export function TaskPage({ id }) {
  // The scheduler's answer is read on every refresh while the task waits, once after.
  const [placementOnce, setPlacementOnce] = useState(null);
  const data = usePolled(
    async (signal) => {
      const task = await api(`tasks/${encodeURIComponent(id)}`, { signal });
      const job = await api(`jobs/${encodeURIComponent(task.jobId)}`, { signal }).catch((error) =>
        error && error.name === 'AbortError' ? Promise.reject(error) : null,
      );
      let placement = placementOnce;
      if (task.status.state === 'Accepted' || placement === null) {
        placement = await api(`scheduler/results/${encodeURIComponent(id)}`, { signal }).catch((error) =>
          error && error.name === 'AbortError' ? Promise.reject(error) : { error },
        );
        if (task.status.state !== 'Accepted') setPlacementOnce(placement);
      }
      return { task, job, placement };
    },
    [id],
    REFRESH_MS,
  );

  if (data.value === undefined) {
    return html`<section aria-labelledby="task-title">
      <h1 id="task-title">Task <${Mono}>${id}<//></h1>
      <${ErrorNotice} error=${data.error} action="Reading the task" />
      ${data.loading ? html`<${Loading} what="the task" />` : null}
    </section>`;
  }
  const { task, job, placement } = data.value;
  const finished = task.status.state === 'Finished';
  const service = job && job.jobDescriptor.service;
  return html`<section aria-labelledby="task-title">
    <h1 id="task-title">Task <${Mono}>${task.id}<//></h1>
    <${ErrorNotice} error=${data.error} action="Refreshing the task" />
    <${Freshness} at=${data.at} error=${data.error} />
    <div class="columns">
      <section aria-labelledby="task-summary-title">
        <h2 id="task-summary-title">Summary</h2>
        <dl class="summary">
          <dt>Job</dt><dd><a href=${jobHref(task.jobId)}><${Mono}>${task.jobId}<//></a>${job ? ` (${job.jobDescriptor.applicationName})` : ''}</dd>
          <dt>Index</dt><dd>${task.index}</dd>
          <dt>State</dt>
          <dd id="task-state"><${State} state=${task.status.state} reason=${task.status.reasonCode} />${task.status.reasonMessage
            ? html` — ${task.status.reasonMessage}`
            : null}</dd>
          <dt>Agent</dt><dd>${task.agentId ? `${task.agentId} (incarnation ${task.agentIncarnation})` : 'not placed'}</dd>
          <dt>Resources</dt><dd>${resourcesOf(task.resources)}</dd>
          <dt>Created</dt><dd>${time(task.createdAtMs)}</dd>
          <dt>Started</dt><dd>${time(task.startedAtMs)}</dd>
          ${task.notBeforeMs ? html`<dt>Not placed before</dt><dd>${time(task.notBeforeMs)} (a retry delay)</dd>` : null}
          ${task.exitCode !== undefined && task.exitCode !== null ? html`<dt>Exit code</dt><dd>${task.exitCode}${task.oomKilled ? ' (killed: out of memory)' : ''}</dd>` : null}
          <dt>Original task</dt><dd>${task.originalId === task.id ? 'this one' : html`<a href=${taskHref(task.originalId)}><${Mono}>${task.originalId}<//></a>`}</dd>
          ${task.resubmitOf ? html`<dt>Replaces</dt><dd><a href=${taskHref(task.resubmitOf)}><${Mono}>${task.resubmitOf}<//></a> (resubmit ${task.resubmitNumber}, ${task.systemResubmitNumber || 0} after system errors)</dd>` : null}
        </dl>
      </section>
      <section aria-labelledby="task-kill-title">
        <h2 id="task-kill-title">Kill</h2>
        <${TaskKill} task=${task} service=${Boolean(service)} finished=${finished} onDone=${data.reload} />
      </section>
    </div>
    <section aria-labelledby="placement-title">
      <h2 id="placement-title">${task.status.state === 'Accepted' ? 'Why it waits' : 'Placement'}</h2>
      <${Placement} result=${placement} />
    </section>
    <section aria-labelledby="logs-title">
      <h2 id="logs-title">Output</h2>
      <${TaskLogs} id=${task.id} started=${Boolean(task.agentId)} />
    </section>
    <section aria-labelledby="history-title">
      <h2 id="history-title">Status history</h2>
      <table class="history">
        <thead>
          <tr><th scope="col">State</th><th scope="col">Reason</th><th scope="col">Message</th><th scope="col">Time</th></tr>
        </thead>
        <tbody>
          ${historyOf(task).map(
            (status, n) => html`<tr key=${n}>
              <td><${State} state=${status.state} /></td>
              <td>${status.reasonCode || ''}</td>
              <td>${status.reasonMessage || ''}</td>
              <td>${time(status.timestampMs)}</td>
            </tr>`,
          )}
        </tbody>
      </table>
    </section>
  </section>`;
}

/** The history with the current status last, once. */
function historyOf(task) {
  const history = [...(task.statusHistory || [])];
  const last = history[history.length - 1];
  if (!last || last.state !== task.status.state || last.timestampMs !== task.status.timestampMs) history.push(task.status);
  return history;
}

function resourcesOf(r = {}) {
  return `${r.cpu ?? 1} CPU, ${r.memoryMB ?? 512} MB memory, ${r.diskMB ?? 10000} MB disk, ${r.networkMbps ?? 128} Mbps${r.gpu ? `, ${r.gpu} GPU` : ''}`;
}

function TaskKill({ task, service, finished, onDone }) {
  const [shrink, setShrink] = useState(false);
  return html`<${KillButton}
    label="Kill task"
    disabled=${finished}
    question=${`Kill task ${task.id}?${service && !shrink ? ' The service replaces it unless you shrink the job.' : ''}`}
    onKill=${async () => {
      const killed = await api(`tasks/${encodeURIComponent(task.id)}`, { method: 'DELETE', query: { shrink: shrink ? 'true' : '' } });
      onDone();
      return `Kill requested: the task is ${killed.status.state}.`;
    }}
  >
    ${service
      ? html`<label class="inline"><input type="checkbox" checked=${shrink} onChange=${(e) => setShrink(e.currentTarget.checked)} /> Shrink: lower the job's desired capacity by one instead of replacing the task</label>`
      : null}
  <//>`;
}

/** The scheduler's answer for a task or a job (`GET /api/v3/scheduler/results/{id}`). */
export function Placement({ result }) {
  if (!result) return html`<p class="loading">Asking the scheduler\u2026</p>`;
  if (result.error) {
    if (result.error.status === 404) return html`<p class="empty">The scheduler has nothing on record for it (it finished without being placed, or its record is gone).</p>`;
    return html`<${ErrorNotice} error=${result.error} action="Reading the scheduler's result" />`;
  }
  if (result.success) return html`<p class="placement-success">${result.success.message}</p>`;
  const failures = (result.failures && result.failures.failures) || [];
  if (!failures.length) return html`<p class="placement-message">${result.message || 'The scheduler has not tried to place it yet.'}</p>`;
  return html`<div class="placement-failures">
    <p>
      ${result.unplacedTasks ?? '?'} task${result.unplacedTasks === 1 ? '' : 's'} could not be placed
      since ${time(result.sinceMs)} (last confirmed ${time(result.computedAtMs)}${result.stale ? ', stale: the scheduler has not confirmed it for three minutes' : ''}).
    </p>
    ${result.insufficient && result.insufficient.length ? html`<p>More capacity needed in: ${result.insufficient.join(', ')}.</p>` : null}
    <table>
      <thead><tr><th scope="col">Reason</th><th scope="col">Agents rejected</th></tr></thead>
      <tbody>
        ${failures.map((f, n) => html`<tr key=${n}><td>${f.reason}</td><td>${f.failureCount}</td></tr>`)}
      </tbody>
    </table>
  </div>`;
}

const LOG_TAIL = 200;
const LOG_KEPT = 2000;
const LOG_POLL_MS = 2000;

/**
 * The task's output: its last lines, then what it writes, read with the cursor of the previous
 * answer every 2 s until the task has finished and a read brings nothing more.
 */
function TaskLogs({ id, started }) {
  const [log, setLog] = useState({ lines: [], error: null, done: false, location: null });
  const cursorRef = useRef(null);
  useEffect(() => {
    if (!started) return undefined;
    const controller = new AbortController();
    let timer;
    let stopped = false;
    cursorRef.current = null;
    setLog({ lines: [], error: null, done: false, location: null });
    const poll = async () => {
      let done = false;
      try {
        const query = cursorRef.current ? { cursor: cursorRef.current } : { tail: LOG_TAIL };
        const page = await api(`tasks/${encodeURIComponent(id)}/logs`, { query, signal: controller.signal });
        if (stopped) return;
        if (page.cursor) cursorRef.current = page.cursor;
        done = page.taskFinished && page.lines.length === 0 && Boolean(page.cursor);
        setLog((previous) => ({
          lines: [...previous.lines, ...page.lines].slice(-LOG_KEPT),
          error: null,
          done,
          location: page.location,
        }));
      } catch (error) {
        if (stopped || (error && error.name === 'AbortError')) return;
        setLog((previous) => ({ ...previous, error }));
      }
      if (!stopped && !done) timer = setTimeout(poll, LOG_POLL_MS);
    };
    poll();
    return () => {
      stopped = true;
      clearTimeout(timer);
      controller.abort();
    };
  }, [id, started]);

  if (!started) return html`<p class="empty">No output: the task has not been placed.</p>`;
  const notFound = log.error && log.error.status === 404;
  return html`<div class="task-logs">
    ${notFound
      ? html`<p class="empty" id="task-logs-missing">${log.error.message}</p>`
      : html`<${ErrorNotice} error=${log.error} action="Reading the task's output" />`}
    ${log.location
      ? html`<p class="log-location">CloudWatch Logs: group <${Mono}>${log.location.group}<//>, stream <${Mono}>${log.location.stream}<//>${log.done ? ' (the task has finished)' : ' (following)'}</p>`
      : null}
    ${log.lines.length
      ? html`<pre id="task-logs" aria-label="task output">${log.lines.map((line) => `${new Date(line.timestampMs).toISOString()} ${line.message}\n`).join('')}</pre>`
      : notFound || log.error
        ? null
        : html`<p class="empty">No output yet.</p>`}
  </div>`;
}
