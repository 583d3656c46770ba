// The agents: what each offers, what its placed tasks hold, and when it last reported.

import { html } from 'htm/preact';
import { api } from '../api.js';
import { ErrorNotice, Freshness, Loading, Mono, usePolled } from '../components.js';
import { age, cores } from '../format.js';

const REFRESH_MS = 3000;

export function AgentsPage() {
  const data = usePolled((signal) => api('agents', { signal }), [], REFRESH_MS);
  const agents = (data.value && data.value.items) || [];
  return html`<section aria-labelledby="agents-title">
    <h1 id="agents-title">Agents</h1>
    <${ErrorNotice} error=${data.error} action="Listing agents" />
    ${data.value === undefined && data.loading ? html`<${Loading} what="agents" />` : null}
    ${data.value ? html`<${Totals} agents=${agents} />` : null}
    ${data.value && !agents.length ? html`<p class="empty">No agent has registered.</p>` : null}
    ${agents.length
      ? html`<table class="agents">
          <thead>
            <tr>
              <th scope="col">Agent</th>
              <th scope="col">State</th>
              <th scope="col">Zone</th>
              <th scope="col">Machine</th>
              <th scope="col">CPU (cores)</th>
              <th scope="col">Memory (MB)</th>
              <th scope="col">Disk (MB)</th>
              <th scope="col">Network (Mbps)</th>
              <th scope="col">Tasks</th>
              <th scope="col">Heartbeat</th>
            </tr>
          </thead>
          <tbody>
            ${agents.map(
              (agent) => html`<tr key=${agent.id} data-agent-id=${agent.id}>
                <td><${Mono}>${agent.id}<//><br /><span class="reason">incarnation ${agent.incarnation ?? 1}</span></td>
                <td><span class=${`state agent-${agent.state}`}>${agent.state}</span></td>
                <td>${agent.zone}</td>
                <td>${agent.machineType}<br /><span class="reason">${agent.machineGroup}</span></td>
                <td class="alloc" data-resource="cpu"><${Use} name="CPU" used=${agent.allocated.cpuMillis} of=${agent.capacity.cpuMillis} show=${cores} /></td>
                <td class="alloc" data-resource="memory"><${Use} name="Memory" used=${agent.allocated.memoryMb} of=${agent.capacity.memoryMb} /></td>
                <td class="alloc" data-resource="disk"><${Use} name="Disk" used=${agent.allocated.diskMb} of=${agent.capacity.diskMb} /></td>
                <td class="alloc" data-resource="network"><${Use} name="Network" used=${agent.allocated.networkMbps} of=${agent.capacity.networkMbps} /></td>
                <td data-resource="tasks">${agent.taskCount}</td>
                <td>${age(agent.heartbeatAtMs)}</td>
              </tr>`,
            )}
          </tbody>
        </table>`
      : null}
    <${Freshness} at=${data.at} error=${data.error} />
  </section>`;
}

const plain = (n) => String(n ?? 0);

/** `1.5 of 2` with a meter, labelled for screen readers. */
function Use({ name, used, of, show = plain }) {
  const percent = of ? Math.round((100 * (used || 0)) / of) : 0;
  return html`<span class="use">${show(used)} of ${show(of)} <span class="reason">(${percent}%)</span></span>
    <meter min="0" max=${of || 1} value=${used || 0} high=${(of || 1) * 0.9} aria-label=${`${name} allocated: ${percent}%`}></meter>`;
}

function Totals({ agents }) {
  const sum = (pick) => agents.reduce((total, agent) => total + (pick(agent) || 0), 0);
  const active = agents.filter((a) => a.state === 'active').length;
  const tasks = sum((a) => a.taskCount);
  const sentence =
    `${agents.length} agent${agents.length === 1 ? '' : 's'} (${active} active): ` +
    `${cores(sum((a) => a.allocated.cpuMillis))} of ${cores(sum((a) => a.capacity.cpuMillis))} cores and ` +
    `${sum((a) => a.allocated.memoryMb)} of ${sum((a) => a.capacity.memoryMb)} MB memory allocated to ` +
    `${tasks} task${tasks === 1 ? '' : 's'}.`;
  return html`<p id="agent-totals">${sentence}</p>`;
}
