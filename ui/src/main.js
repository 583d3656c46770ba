// The dashboard: a header with the navigation and the identity box, and the page the address's
// hash names. Every page reads the API with the token of the identity box (or none).

import { html, render } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { loadToken, storeToken } from './api.js';
import { AgentsPage } from './pages/agents.js';
import { EventsPage } from './pages/events.js';
import { JobPage } from './pages/job.js';
import { JobsPage } from './pages/jobs.js';
import { TaskPage } from './pages/task.js';
import { useRoute } from './router.js';

const UUID = '([0-9a-fA-F-]{36})';
const ROUTES = [
  [/^\/jobs$/, 'Jobs', 'jobs', ({ params }) => html`<${JobsPage} params=${params} />`],
  [new RegExp(`^/jobs/${UUID}$`), 'Job', 'jobs', ({ match }) => html`<${JobPage} id=${match[1].toLowerCase()} />`],
  [new RegExp(`^/tasks/${UUID}$`), 'Task', 'jobs', ({ match }) => html`<${TaskPage} id=${match[1].toLowerCase()} />`],
  [/^\/agents$/, 'Agents', 'agents', () => html`<${AgentsPage} />`],
  [/^\/events$/, 'Events', 'events', ({ params }) => html`<${EventsPage} params=${params} />`],
];

function App() {
  const route = useRoute();
  const [token, setToken] = useState(loadToken);
  const found = ROUTES.map(([pattern, title, section, page]) => ({ match: route.path.match(pattern), title, section, page })).find(
    (r) => r.match,
  );
  useEffect(() => {
    document.title = `${found ? found.title : 'Not found'} · Titus`;
  }, [found && found.title]);
  return html`<header class="top">
      <a class="brand" href="#/jobs">Titus</a>
      <nav aria-label="Sections">
        ${[
          ['jobs', '#/jobs', 'Jobs'],
          ['agents', '#/agents', 'Agents'],
          ['events', '#/events', 'Events'],
        ].map(
          ([section, target, label]) =>
            html`<a href=${target} aria-current=${found && found.section === section ? 'page' : undefined}>${label}</a>`,
        )}
      </nav>
      <${IdentityBox}
        token=${token}
        onChange=${(value) => {
          storeToken(value);
          setToken(value);
        }}
      />
    </header>
    <main id="main">
      ${found
        ? html`<${Page} key=${`${route.raw}|${token}`} render=${found.page} match=${found.match} params=${route.params} />`
        : html`<h1>No such page</h1>
            <p>Nothing lives at <code>#${route.path}</code>. Try the <a href="#/jobs">jobs</a>.</p>`}
    </main>`;
}

// Keyed by the address and the token: another page, other filters or another identity start
// the page afresh.
const Page = ({ render: page, match, params }) => page({ match, params });

function IdentityBox({ token, onChange }) {
  const [draft, setDraft] = useState(token);
  const submit = (event) => {
    event.preventDefault();
    onChange(draft.trim());
  };
  return html`<form class="identity" onSubmit=${submit} aria-label="Identity">
    <label for="token">Bearer token</label>
    <input id="token" name="token" type="password" autocomplete="off" spellcheck="false" value=${draft} onInput=${(e) => setDraft(e.currentTarget.value)} />
    <button type="submit">Use token</button>
    <button type="button" disabled=${!token && !draft} onClick=${() => {
      setDraft('');
      onChange('');
    }}>Forget token</button>
    <p class="identity-status" id="identity-status" role="status">
      ${token
        ? 'Requests carry this token (kept for this tab only).'
        : 'No token: requests go without an Authorization header (for a signing proxy in front).'}
    </p>
  </form>`;
}

render(html`<${App} />`, document.getElementById('app'));
