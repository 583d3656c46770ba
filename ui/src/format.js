// How values read on the page: UTC times, cores from millicores, job types and capacities.

export function time(ms) {
  if (ms === undefined || ms === null || ms === 0) return '—';
  const date = new Date(ms);
  if (Number.isNaN(date.getTime())) return '—';
  return date.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

export function age(ms, now = Date.now()) {
  if (!ms) return '—';
  const secs = Math.max(0, Math.round((now - ms) / 1000));
  if (secs < 120) return `${secs} s ago`;
  if (secs < 7200) return `${Math.round(secs / 60)} min ago`;
  if (secs < 172800) return `${Math.round(secs / 3600)} h ago`;
  return `${Math.round(secs / 86400)} days ago`;
}

export const cores = (millis) => `${(Number(millis || 0) / 1000).toFixed(2).replace(/\.?0+$/, '') || '0'}`;

export const jobType = (job) => (job.jobDescriptor && job.jobDescriptor.batch ? 'batch' : 'service');

export function imageOf(descriptor) {
  const image = (descriptor.container && descriptor.container.image) || {};
  if (image.digest) return `${image.name}@${image.digest}`;
  return `${image.name}:${image.tag || 'latest'}`;
}

export function commandOf(descriptor) {
  const container = descriptor.container || {};
  const words = [...(container.entryPoint || []), ...(container.command || [])];
  return words.length ? words.map(shellWord).join(' ') : '(the image default)';
}

function shellWord(word) {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/** `desired 2 (min 1, max 3)` for a service, `3 tasks` for a batch job. */
export function sizeOf(job) {
  const descriptor = job.jobDescriptor || {};
  if (descriptor.batch) {
    const size = descriptor.batch.size || 1;
    return `${size} task${size === 1 ? '' : 's'}`;
  }
  const capacity = (descriptor.service && descriptor.service.capacity) || {};
  return `desired ${capacity.desired ?? 0} (min ${capacity.min ?? 0}, max ${capacity.max ?? 0})`;
}

/** `2 Started, 1 Accepted`, in lifecycle order. */
export const TASK_STATES = ['Accepted', 'Launched', 'StartInitiated', 'Started', 'KillInitiated', 'Finished'];

export function countStates(tasks) {
  const counts = new Map();
  for (const task of tasks) counts.set(task.status.state, (counts.get(task.status.state) || 0) + 1);
  return TASK_STATES.filter((state) => counts.has(state))
    .map((state) => `${counts.get(state)} ${state}`)
    .join(', ');
}
