/**
 * What the side panel shows, as plain TypeScript: tested with Jest, no JupyterLab or DOM here.
 *
 * The panel is a view over the gateway's REST API (`{base_url}/gateway/api/`), the same API the
 * widgets and the Python API use; these functions turn its answers into what a person reads and
 * decide when to ask again. They mirror `science_gateway.widgets.state` (one wording for both).
 */

export interface IDataset {
  did: string;
  scope: string;
  name: string;
  bytes: number | null;
  files: number | null;
  metadata: Record<string, unknown>;
  availability: 'disk' | 'tape' | 'unknown';
  metadata_pending?: boolean;
}

export interface ISearchPage {
  datasets: IDataset[];
  next: string | null;
}

export interface IFailedFile {
  did: string;
  reason: string;
}

export interface IStageRequest {
  id: string;
  did: string;
  state: 'in_progress' | 'ready' | 'failed';
  files_total: number;
  files_done: number;
  files_in_flight: number;
  files_failed: number;
  bytes_total: number | null;
  tape_recall: boolean;
  message: string;
  failed: IFailedFile[];
  paths: string[];
  notice?: string;
}

export interface IPreset {
  description: string;
  partition: string | null;
  cores: number;
  memory_gb: number;
  workers_per_job: number;
  walltime_minutes: number;
  max_workers: number;
}

export interface IPresets {
  backend: string;
  max_workers: number;
  account: string | null;
  presets: Record<string, IPreset>;
}

export interface ICluster {
  id: string;
  preset: string;
  status: string;
  workers: number;
  requested: number;
  workers_per_job: number;
  max_workers: number;
  dashboard_link: string;
}

export function humanBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) {
    return '?';
  }
  let size = n;
  for (const unit of ['B', 'kB', 'MB', 'GB', 'TB']) {
    if (size < 1000 || unit === 'TB') {
      return unit === 'B' ? `${size.toFixed(0)} ${unit}` : `${size.toFixed(1)} ${unit}`;
    }
    size /= 1000;
  }
  return `${size.toFixed(1)} PB`;
}

export function availabilityText(dataset: IDataset): string {
  return dataset.availability === 'disk'
    ? 'available now'
    : dataset.availability === 'tape'
      ? 'on tape'
      : 'unknown';
}

export function metadataText(metadata: Record<string, unknown>): string {
  return Object.keys(metadata)
    .sort()
    .map(key => `${key}=${String(metadata[key])}`)
    .join(', ');
}

/** One readable line for an API error: its `message` (the API says what to do), never a dump. */
export function errorText(status: number, body: unknown): string {
  const message =
    body && typeof body === 'object' && typeof (body as any).message === 'string'
      ? ((body as any).message as string)
      : '';
  if (message) {
    return message.charAt(0).toUpperCase() + message.slice(1);
  }
  if (status === 0) {
    return 'The server did not answer: is it still running?';
  }
  return `The gateway answered HTTP ${status}.`;
}

/** How one stage-in request reads: "recalling from tape (0 of 3 files), 12.0 MB", "ready", "stuck: why". */
export interface IRequestView {
  did: string;
  words: string;
  done: number;
  total: number;
  style: 'success' | 'danger' | 'info';
  failed: string[];
  paths: string[];
  canCancel: boolean;
}

export function requestView(request: IStageRequest): IRequestView {
  const failed = (request.failed || []).map(f => `${f.did}: ${f.reason}`);
  let words: string;
  let style: IRequestView['style'];
  if (request.state === 'ready') {
    words = 'ready';
    style = 'success';
  } else if (request.state === 'failed' || (failed.length > 0 && !request.files_in_flight)) {
    const reason = request.failed.length
      ? request.failed[0].reason
      : request.message || 'no reason given';
    words = `stuck: ${reason}`;
    style = 'danger';
  } else if (request.tape_recall) {
    words = 'recalling from tape';
    style = 'info';
  } else {
    words = 'copying';
    style = 'info';
  }
  if (request.state !== 'ready' && request.files_total) {
    words += ` (${request.files_done} of ${request.files_total} files)`;
  }
  if (request.bytes_total) {
    words += `, ${humanBytes(request.bytes_total)}`;
  }
  return {
    did: request.did,
    words,
    done: request.files_done,
    total: Math.max(request.files_total, 1),
    style,
    failed,
    paths: [...(request.paths || [])],
    canCancel: request.state === 'in_progress'
  };
}

/** What the Requests tab shows, in a form that compares equal when nothing a person sees changed. */
export function requestsSnapshot(requests: IStageRequest[], error = ''): string {
  return JSON.stringify([
    error,
    ...requests.map(r => [
      r.id,
      r.state,
      r.files_done,
      r.files_in_flight,
      r.files_failed,
      (r.paths || []).length,
      r.notice || ''
    ])
  ]);
}

/**
 * When a tab asks the gateway again (pure; the panel's timer follows it).
 *
 * It polls only while the panel is visible: `interval` ms after something happened here (a stage,
 * a cancel, the tab shown), then every `steady` ms while what it shows changes, doubling up to
 * `maxInterval` while nothing changes, and at `maxInterval` while nothing is in progress. One call
 * asks for everything the tab shows (all of the user's requests at once), so 20 requests cost what
 * one does. Staging from tape takes minutes: `steady` is what a person watching needs, not more.
 */
export class PollSchedule {
  delay: number;
  private last: string | null = null;

  constructor(
    readonly interval = 2000,
    readonly steady = 15000,
    readonly maxInterval = 60000
  ) {
    this.delay = interval;
  }

  /** Note one poll's answer; returns the delay before the next one. */
  polled(snapshot: string, inProgress = true): number {
    if (!inProgress) {
      this.delay = this.maxInterval;
    } else if (snapshot !== this.last) {
      this.delay = this.steady;
    } else {
      this.delay = Math.min(Math.max(this.delay * 2, this.steady), this.maxInterval);
    }
    this.last = snapshot;
    return this.delay;
  }

  /** Something happened here (a stage, a cancel, the panel shown again): poll soon. */
  changed(): void {
    this.delay = this.interval;
  }

  /** Milliseconds until the next poll, or null: the panel is hidden, do not poll. */
  nextWait(visible: boolean): number | null {
    return visible ? this.delay : null;
  }
}

/** A Python string literal for `text` (a DID holds only letters, digits and `._-/:`). */
export function pythonString(text: string): string {
  return JSON.stringify(text);
}

/**
 * The cell "insert paths" puts into the notebook: the dataset's local paths through the Python
 * API, so the notebook stays reproducible (staging again reuses the request, or makes a new one on
 * another day, and waits until the files are there).
 */
export function pathsCode(did: string): string {
  return [
    'from science_gateway import catalog',
    '',
    '# staged from the Science Gateway panel (staging again reuses the request)',
    `paths = catalog.paths(catalog.wait(catalog.stage(${pythonString(did)})))`,
    'paths'
  ].join('\n');
}

export function presetLabel(name: string, preset: IPreset): string {
  const size = `${preset.cores} core${preset.cores !== 1 ? 's' : ''}, ${preset.memory_gb} GB per worker`;
  return `${name}: ${preset.description || size}`;
}

/** `[label, name]` of the presets the user may use, smallest workers first. */
export function presetOptions(described: IPresets): [string, string][] {
  return Object.entries(described.presets || {})
    .sort(
      ([an, a], [bn, b]) =>
        a.cores - b.cores || a.memory_gb - b.memory_gb || (an < bn ? -1 : an > bn ? 1 : 0)
    )
    .map(([name, p]) => [presetLabel(name, p), name]);
}

/** The most workers one cluster of preset `name` may have for this user. */
export function presetLimit(described: IPresets, name: string): number {
  const preset = described.presets[name];
  return Math.max(0, Math.min(preset.max_workers, described.max_workers ?? preset.max_workers));
}

export function noPresetsText(described: IPresets): string {
  return Object.keys(described.presets || {}).length
    ? ''
    : 'You may not start Dask clusters on this gateway: none of your groups is allowed Dask workers. Ask the gateway admins.';
}

/** A cluster's live line, e.g. "2 of 4 workers connected". */
export function workersText(connected: number, requested: number): string {
  if (requested === 0 && connected === 0) {
    return 'No workers: scale up to start some.';
  }
  return `${connected} of ${requested} worker${requested !== 1 ? 's' : ''} connected.`;
}

export function clustersSnapshot(clusters: ICluster[], error = ''): string {
  return JSON.stringify([error, ...clusters.map(c => [c.id, c.status, c.workers, c.requested])]);
}

/** Whether a cluster is still on its way to what was asked (poll it soon). */
export function clusterSettling(cluster: ICluster): boolean {
  return cluster.workers !== cluster.requested || cluster.status !== 'running';
}

/** The search's query string (`pattern`, `filters` in the API's `key=value, ...` syntax). */
export function searchQuery(
  pattern: string,
  filters: string,
  page: string | null,
  limit = 50,
  partial = true
): string {
  const params = new URLSearchParams();
  params.set('pattern', pattern.trim() || '*');
  if (filters.trim()) {
    params.set('filters', filters.trim());
  }
  params.set('limit', String(limit));
  params.set('partial', String(partial));
  if (page) {
    params.set('page', page);
  }
  return params.toString();
}

/** The dashboard link as a path of this server (JupyterLab opens it in a tab), or null. */
export function dashboardPath(link: string, origin: string): string | null {
  if (!link) {
    return null;
  }
  try {
    const url = new URL(link, origin);
    return url.origin === origin ? url.pathname + url.search : null;
  } catch {
    return null;
  }
}
