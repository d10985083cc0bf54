/**
 * The side panel: tabs over the gateway's REST API (Data, Requests, Clusters).
 *
 * Plain DOM in Lumino widgets: real buttons, inputs and labels (keyboard and screen readers work
 * as everywhere in JupyterLab), JupyterLab's theme variables for colours (the dark theme works).
 * Each tab that watches something polls only while it is visible, backing off while nothing
 * changes (`PollSchedule`); later tabs (jobs, usage) join the same panel.
 */
import { Message } from '@lumino/messaging';
import { Panel, StackedPanel, Widget } from '@lumino/widgets';

import { GatewayAPI, GatewayError } from './api';
import {
  ICluster,
  IDataset,
  IPresets,
  ISearchPage,
  IStageRequest,
  PollSchedule,
  availabilityText,
  clusterSettling,
  clustersSnapshot,
  humanBytes,
  metadataText,
  noPresetsText,
  presetLimit,
  presetOptions,
  requestView,
  requestsSnapshot,
  searchQuery,
  workersText
} from './state';

/** What the panel needs from JupyterLab (index.ts provides it; tests of the DOM are in Chromium). */
export interface IPanelHost {
  api: GatewayAPI;
  /** Put code using the dataset's local paths into the active notebook; false: none is open. */
  insertPaths(did: string): Promise<boolean>;
  /** Open a Dask dashboard (a path of this server) in a JupyterLab tab. */
  openDashboard(path: string, title: string): void;
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Partial<Record<string, string>> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined) {
      continue;
    }
    if (key === 'className') {
      node.className = value;
    } else if (key === 'text') {
      node.textContent = value;
    } else {
      node.setAttribute(key, value);
    }
  }
  node.append(...children);
  return node;
}

function button(label: string, className: string, onClick: () => void, title?: string): HTMLButtonElement {
  const b = el('button', { className: `sg-button ${className}`, type: 'button', title }, label);
  b.addEventListener('click', onClick);
  return b;
}

function messageOf(e: unknown): string {
  return e instanceof GatewayError ? e.message : e instanceof Error ? e.message : String(e);
}

/**
 * What an action said under its row ("Staging: see Requests.", an error), kept by row key, so a
 * row drawn again (a refresh, metadata arriving) still says it.
 */
class RowNotes {
  private notes = new Map<string, { text: string; error: boolean }>();
  private live = new Map<string, HTMLElement>();

  /** The note element of a row being drawn, showing what was said there before. */
  element(key: string): HTMLElement {
    const node = el('div', { className: 'sg-row-note', 'aria-live': 'polite' });
    this.live.set(key, node);
    this.paint(key);
    return node;
  }

  say(key: string, text: string, error = false): void {
    this.notes.set(key, { text, error });
    this.paint(key);
  }

  private paint(key: string): void {
    const node = this.live.get(key);
    const note = this.notes.get(key);
    if (node) {
      node.className = note?.error ? 'sg-row-note sg-error' : 'sg-row-note';
      node.textContent = note?.text ?? '';
    }
  }
}

/** Insert paths: the code into the active notebook, and what happened in the row's note. */
async function insertPaths(host: IPanelHost, did: string, notes: RowNotes, key: string): Promise<void> {
  const inserted = await host.insertPaths(did);
  notes.say(
    key,
    inserted
      ? 'Code inserted into the notebook: run the cell for the paths.'
      : 'Open a notebook first: the code goes into the active notebook.',
    !inserted
  );
}

/** A tab that asks the gateway again on a schedule, only while it is visible. */
abstract class PollingTab extends Widget {
  protected schedule: PollSchedule;
  private timer: number | null = null;
  private polling = false;
  private again = false;
  private onVisibility = () => this.wake();

  constructor(interval: number, steady: number, maxInterval: number) {
    super();
    this.schedule = new PollSchedule(interval, steady, maxInterval);
  }

  /** One poll: ask the gateway, render, return the delay before the next one. */
  protected abstract poll(): Promise<number>;

  /** Poll now (after an action here, or the tab shown again). */
  poke(): void {
    this.schedule.changed();
    this.wake();
  }

  private visibleNow(): boolean {
    return this.isVisible && !document.hidden;
  }

  private wake(): void {
    this.clearTimer();
    if (this.polling) {
      this.again = true; // asked for during a poll: poll once more right after it
    } else if (this.visibleNow()) {
      void this.run();
    }
  }

  private async run(): Promise<void> {
    this.polling = true;
    let delay: number;
    try {
      delay = await this.poll();
    } finally {
      this.polling = false;
    }
    if (this.again) {
      this.again = false;
      this.schedule.changed();
      delay = this.schedule.interval;
    }
    const wait = this.schedule.nextWait(this.visibleNow());
    this.clearTimer();
    if (wait !== null) {
      this.timer = window.setTimeout(() => void this.run(), Math.min(delay, wait));
    }
  }

  private clearTimer(): void {
    if (this.timer !== null) {
      window.clearTimeout(this.timer);
      this.timer = null;
    }
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    document.addEventListener('visibilitychange', this.onVisibility);
    this.poke();
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    document.removeEventListener('visibilitychange', this.onVisibility);
    this.clearTimer();
  }

  dispose(): void {
    this.clearTimer();
    document.removeEventListener('visibilitychange', this.onVisibility);
    super.dispose();
  }
}

// -- Data --------------------------------------------------------------------------------------

export class DataTab extends Widget {
  private pattern: HTMLInputElement;
  private filters: HTMLInputElement;
  private status: HTMLElement;
  private error: HTMLElement;
  private results: HTMLElement;
  private more: HTMLButtonElement;
  private next: string | null = null;
  private shown: IDataset[] = [];
  private query: [string, string] = ['*', ''];
  private notes = new RowNotes();

  constructor(
    private host: IPanelHost,
    private onStaged: () => void
  ) {
    super();
    this.addClass('sg-data');
    this.title.label = 'Data';
    this.pattern = el('input', {
      className: 'sg-pattern',
      type: 'text',
      id: `sg-pattern-${this.id}`,
      placeholder: 'run2024.*',
      'aria-label': 'Dataset name pattern'
    });
    this.filters = el('input', {
      className: 'sg-filters',
      type: 'text',
      placeholder: 'project=run2024, datatype=RAW',
      'aria-label': 'Metadata filters'
    });
    const form = el(
      'form',
      { className: 'sg-search-form', role: 'search' },
      el('label', { text: 'Name' }, this.pattern),
      el('label', { text: 'Metadata' }, this.filters),
      el('button', { className: 'sg-button sg-search', type: 'submit' }, 'Search')
    );
    form.addEventListener('submit', e => {
      e.preventDefault();
      void this.search();
    });
    this.status = el('div', { className: 'sg-status', 'aria-live': 'polite' });
    this.error = el('div', { className: 'sg-error', role: 'alert' });
    this.results = el('ul', { className: 'sg-results', 'aria-label': 'Datasets found' });
    this.more = button('More results', 'sg-more', () => void this.fetch(true));
    this.more.hidden = true;
    this.status.textContent = 'Search by name pattern and metadata, e.g. project=run2024, datatype=RAW.';
    this.node.append(form, this.status, this.error, this.results, this.more);
  }

  async search(pattern?: string, filters?: string): Promise<void> {
    if (pattern !== undefined) {
      this.pattern.value = pattern;
    }
    if (filters !== undefined) {
      this.filters.value = filters;
    }
    this.query = [this.pattern.value, this.filters.value];
    this.next = null;
    await this.fetch(false);
  }

  private async fetch(more: boolean): Promise<void> {
    const page = more ? this.next : null;
    this.error.textContent = '';
    try {
      const answer = await this.host.api.get<ISearchPage>(
        `datasets?${searchQuery(this.query[0], this.query[1], page)}`
      );
      this.shown = more ? [...this.shown, ...answer.datasets] : answer.datasets;
      this.next = answer.next;
      if (answer.datasets.some(d => d.metadata_pending)) {
        // sizes and availability are here; the rest of the metadata is on its way
        window.setTimeout(() => void this.complete(page), 1000);
      }
    } catch (e) {
      this.error.textContent = messageOf(e);
      return;
    }
    this.render();
  }

  /** The same page again, not partial: the metadata the catalogue had not sent yet. */
  private async complete(page: string | null): Promise<void> {
    try {
      const answer = await this.host.api.get<ISearchPage>(
        `datasets?${searchQuery(this.query[0], this.query[1], page, 50, false)}`
      );
      const fresh = new Map(answer.datasets.map(d => [d.did, d]));
      this.shown = this.shown.map(d => fresh.get(d.did) ?? d);
      this.render();
    } catch {
      // keep what is shown: the sizes and availability are there already
    }
  }

  private render(): void {
    this.results.replaceChildren(...this.shown.map(d => this.row(d)));
    this.more.hidden = !this.next;
    this.status.textContent = this.shown.length
      ? `${this.shown.length}${this.next ? '+' : ''} dataset${this.shown.length !== 1 ? 's' : ''} found.`
      : 'No datasets match.';
  }

  private row(dataset: IDataset): HTMLElement {
    const availability = availabilityText(dataset);
    const note = this.notes.element(dataset.did);
    const stage = button('Stage', 'sg-stage', () => void this.stage(dataset), `Stage ${dataset.did}`);
    const insert = button(
      'Insert paths',
      'sg-insert',
      () => void insertPaths(this.host, dataset.did, this.notes, dataset.did),
      `Insert code with the local paths of ${dataset.did} into the active notebook`
    );
    return el(
      'li',
      { className: 'sg-dataset', 'data-did': dataset.did },
      el('div', { className: 'sg-did', text: dataset.did }),
      el(
        'div',
        { className: 'sg-facts' },
        `${humanBytes(dataset.bytes)}, ${dataset.files ?? '?'} file${dataset.files !== 1 ? 's' : ''}, `,
        el('span', { className: `sg-availability sg-availability-${dataset.availability}`, text: availability })
      ),
      el('div', {
        className: 'sg-metadata',
        text: dataset.metadata_pending ? 'metadata on its way…' : metadataText(dataset.metadata || {})
      }),
      el('div', { className: 'sg-actions' }, stage, insert),
      note
    );
  }

  private async stage(dataset: IDataset): Promise<void> {
    try {
      const request = await this.host.api.send<IStageRequest>('POST', 'requests', { did: dataset.did });
      this.notes.say(dataset.did, `${request.state === 'ready' ? 'Ready' : 'Staging'}: see Requests.`);
      this.onStaged();
    } catch (e) {
      this.notes.say(dataset.did, messageOf(e), true);
    }
  }
}

// -- Requests ----------------------------------------------------------------------------------

export class RequestsTab extends PollingTab {
  private list: HTMLElement;
  private notice: HTMLElement;
  private error: HTMLElement;
  private empty: HTMLElement;
  private notes = new RowNotes();
  requests: IStageRequest[] = [];

  constructor(private host: IPanelHost) {
    super(2000, 15000, 60000);
    this.addClass('sg-requests');
    this.title.label = 'Requests';
    this.notice = el('div', { className: 'sg-notice', role: 'status' });
    this.error = el('div', { className: 'sg-error', role: 'alert' });
    this.empty = el('div', { className: 'sg-status', text: 'No staging requests yet: stage a dataset from Data.' });
    this.list = el('ul', { className: 'sg-request-list', 'aria-label': 'Your staging requests' });
    this.node.append(this.notice, this.error, this.empty, this.list);
  }

  protected async poll(): Promise<number> {
    let error = '';
    try {
      const answer = await this.host.api.get<{ requests: IStageRequest[]; notice: string }>('requests');
      this.requests = answer.requests;
      this.notice.textContent = answer.notice || '';
    } catch (e) {
      error = messageOf(e);
    }
    this.error.textContent = error;
    this.render();
    const inProgress = this.requests.some(r => r.state === 'in_progress');
    return this.schedule.polled(requestsSnapshot(this.requests, error), inProgress);
  }

  private render(): void {
    this.empty.hidden = this.requests.length > 0;
    this.list.replaceChildren(...this.requests.map(r => this.row(r)));
  }

  private row(request: IStageRequest): HTMLElement {
    const view = requestView(request);
    const note = this.notes.element(request.id);
    const progress = el('progress', {
      className: `sg-progress sg-progress-${view.style}`,
      max: String(view.total),
      value: String(view.done),
      'aria-label': `${view.done} of ${view.total} files of ${view.did}`
    });
    const actions = el('div', { className: 'sg-actions' });
    if (view.canCancel) {
      actions.append(button('Cancel', 'sg-cancel', () => void this.cancel(request.id), `Cancel staging ${view.did}`));
    }
    if (request.state === 'ready') {
      actions.append(
        button('Insert paths', 'sg-insert', () => void insertPaths(this.host, view.did, this.notes, request.id), `Insert code with the local paths of ${view.did}`)
      );
    }
    const details = el('div', { className: 'sg-request-details' });
    if (view.failed.length) {
      details.append(
        el(
          'details',
          { className: 'sg-failed' },
          el('summary', { text: `${view.failed.length} file${view.failed.length !== 1 ? 's' : ''} failed` }),
          el('ul', {}, ...view.failed.map(f => el('li', { text: f })))
        )
      );
    }
    if (view.paths.length) {
      details.append(
        el(
          'details',
          { className: 'sg-paths' },
          el('summary', { text: `${view.paths.length} local path${view.paths.length !== 1 ? 's' : ''}` }),
          el('ul', {}, ...view.paths.map(p => el('li', { text: p })))
        )
      );
    }
    return el(
      'li',
      { className: `sg-request sg-state-${request.state}`, 'data-did': view.did, 'data-id': request.id },
      el('div', { className: 'sg-did', text: view.did }),
      el('div', { className: 'sg-words', text: view.words }),
      progress,
      details,
      actions,
      note
    );
  }

  private async cancel(id: string): Promise<void> {
    try {
      await this.host.api.send('DELETE', `requests/${encodeURIComponent(id)}`);
      this.poke();
    } catch (e) {
      this.notes.say(id, messageOf(e), true);
    }
  }
}

// -- Clusters ----------------------------------------------------------------------------------

export class ClustersTab extends PollingTab {
  private preset: HTMLSelectElement;
  private workers: HTMLInputElement;
  private limit: HTMLElement;
  private error: HTMLElement;
  private list: HTMLElement;
  private start: HTMLButtonElement;
  private described: IPresets | null = null;
  clusters: ICluster[] = [];

  constructor(private host: IPanelHost) {
    // workers arrive within seconds of a scale: a cluster settling is watched closely
    super(1000, 2000, 60000);
    this.addClass('sg-clusters');
    this.title.label = 'Clusters';
    this.preset = el('select', { className: 'sg-preset', 'aria-label': 'Dask preset' });
    this.preset.addEventListener('change', () => this.showLimit());
    this.workers = el('input', {
      className: 'sg-workers',
      type: 'number',
      min: '0',
      value: '2',
      'aria-label': 'Workers to start with'
    });
    this.start = button('Start cluster', 'sg-start', () => void this.startCluster());
    this.limit = el('div', { className: 'sg-status sg-limit' });
    this.error = el('div', { className: 'sg-error', role: 'alert' });
    this.list = el('ul', { className: 'sg-cluster-list', 'aria-label': 'Your Dask clusters' });
    this.node.append(
      el(
        'div',
        { className: 'sg-cluster-form' },
        el('label', { text: 'Preset' }, this.preset),
        el('label', { text: 'Workers' }, this.workers),
        this.start
      ),
      this.limit,
      this.error,
      this.list
    );
  }

  protected async poll(): Promise<number> {
    let error = '';
    try {
      if (this.described === null) {
        this.described = await this.host.api.get<IPresets>('dask/presets');
        this.renderPresets();
      }
      const answer = await this.host.api.get<{ clusters: ICluster[] }>('dask/clusters');
      this.clusters = answer.clusters;
    } catch (e) {
      error = messageOf(e);
    }
    if (error || !this.error.dataset.action) {
      this.error.textContent = error;
    }
    this.render();
    return this.schedule.polled(clustersSnapshot(this.clusters, error), this.clusters.some(clusterSettling));
  }

  private renderPresets(): void {
    const described = this.described as IPresets;
    const options = presetOptions(described);
    this.preset.replaceChildren(...options.map(([label, name]) => el('option', { value: name }, label)));
    const none = noPresetsText(described);
    this.start.disabled = !options.length;
    this.limit.textContent = none;
    this.showLimit();
  }

  private showLimit(): void {
    if (!this.described || !this.preset.value) {
      return;
    }
    const limit = presetLimit(this.described, this.preset.value);
    this.workers.max = String(limit);
    if (Number(this.workers.value) > limit) {
      this.workers.value = String(limit);
    }
    this.limit.textContent = `Up to ${limit} worker${limit !== 1 ? 's' : ''} for you with this preset.`;
  }

  private actionFailed(e: unknown): void {
    this.error.textContent = messageOf(e);
    this.error.dataset.action = '1'; // an action's error stays until the next action
  }

  private actionDone(): void {
    this.error.textContent = '';
    delete this.error.dataset.action;
    this.poke();
  }

  private async startCluster(): Promise<void> {
    this.start.disabled = true;
    this.limit.textContent = 'Starting the scheduler…';
    try {
      await this.host.api.send<ICluster>('POST', 'dask/clusters', {
        preset: this.preset.value,
        workers: Math.max(0, Math.floor(Number(this.workers.value) || 0))
      });
      this.actionDone();
    } catch (e) {
      this.actionFailed(e);
    } finally {
      this.start.disabled = false;
      this.showLimit();
    }
  }

  private async scale(id: string, workers: number): Promise<void> {
    try {
      await this.host.api.send<ICluster>('PATCH', `dask/clusters/${encodeURIComponent(id)}`, { workers });
      this.actionDone();
    } catch (e) {
      this.actionFailed(e);
    }
  }

  private async closeCluster(id: string): Promise<void> {
    try {
      await this.host.api.send('DELETE', `dask/clusters/${encodeURIComponent(id)}`);
      this.actionDone();
    } catch (e) {
      this.actionFailed(e);
    }
  }

  private render(): void {
    const focused = document.activeElement;
    const keep = focused && this.list.contains(focused) ? (focused as HTMLElement).dataset.key : undefined;
    this.list.replaceChildren(...this.clusters.map(c => this.row(c)));
    if (keep) {
      (this.list.querySelector(`[data-key="${keep}"]`) as HTMLElement | null)?.focus();
    }
  }

  private row(cluster: ICluster): HTMLElement {
    const count = el('input', {
      className: 'sg-scale-count',
      type: 'number',
      min: '0',
      max: String(cluster.max_workers),
      value: String(cluster.requested),
      'aria-label': `Workers of cluster ${cluster.id}`,
      'data-key': `${cluster.id}-count`
    });
    const scale = button('Scale', 'sg-scale', () => void this.scale(cluster.id, Math.max(0, Math.floor(Number(count.value) || 0))));
    scale.dataset.key = `${cluster.id}-scale`;
    const close = button('Close', 'sg-close', () => void this.closeCluster(cluster.id), `Close cluster ${cluster.id} (its workers stop)`);
    close.dataset.key = `${cluster.id}-close`;
    const actions = el('div', { className: 'sg-actions' }, count, scale, close);
    if (cluster.dashboard_link) {
      const dash = button('Dashboard', 'sg-dashboard', () =>
        this.host.openDashboard(cluster.dashboard_link, `Dask ${cluster.preset} ${cluster.id}`)
      );
      dash.dataset.key = `${cluster.id}-dashboard`;
      actions.append(dash);
    }
    return el(
      'li',
      { className: 'sg-cluster', 'data-id': cluster.id },
      el('div', { className: 'sg-did', text: `${cluster.preset} (${cluster.id})` }),
      el('div', { className: 'sg-worker-count', text: workersText(cluster.workers, cluster.requested) }),
      actions
    );
  }
}

// -- the panel ---------------------------------------------------------------------------------

/** The sidebar panel: a tab strip (real buttons) over a stack of tabs. */
export class GatewayPanel extends Panel {
  readonly data: DataTab;
  readonly requests: RequestsTab;
  readonly clusters: ClustersTab;
  private stack = new StackedPanel();
  private strip: HTMLElement;
  private tabs: Widget[];

  constructor(host: IPanelHost) {
    super();
    this.id = 'science-gateway-panel';
    this.addClass('sg-panel');
    this.title.caption = 'Science Gateway: data, requests, clusters';
    this.requests = new RequestsTab(host);
    this.data = new DataTab(host, () => this.requests.poke());
    this.clusters = new ClustersTab(host);
    this.tabs = [this.data, this.requests, this.clusters];
    const strip = new Widget();
    strip.addClass('sg-tabs');
    this.strip = strip.node;
    this.strip.setAttribute('role', 'tablist');
    this.strip.setAttribute('aria-label', 'Science Gateway');
    for (const tab of this.tabs) {
      const b = el('button', { className: 'sg-tab', role: 'tab', type: 'button', 'data-tab': tab.title.label }, tab.title.label);
      b.addEventListener('click', () => this.showTab(tab));
      b.addEventListener('keydown', e => this.arrows(e, tab));
      this.strip.append(b);
      this.stack.addWidget(tab);
    }
    this.stack.addClass('sg-stack');
    // Lumino passes show and hide on to the children: a tab polls only while the panel is open
    // and that tab is the current one
    this.addWidget(strip);
    this.addWidget(this.stack);
    this.showTab(this.data);
  }

  /** Show one tab (the others stop polling). */
  showTab(tab: Widget): void {
    for (const other of this.tabs) {
      if (other !== tab) {
        other.hide();
      }
    }
    tab.show();
    this.strip.querySelectorAll('button').forEach((b, i) => {
      const current = this.tabs[i] === tab;
      b.setAttribute('aria-selected', String(current));
      b.tabIndex = current ? 0 : -1;
    });
  }

  private arrows(e: KeyboardEvent, tab: Widget): void {
    if (e.key !== 'ArrowRight' && e.key !== 'ArrowLeft') {
      return;
    }
    const i = this.tabs.indexOf(tab);
    const next = this.tabs[(i + (e.key === 'ArrowRight' ? 1 : this.tabs.length - 1)) % this.tabs.length];
    this.showTab(next);
    (this.strip.querySelectorAll('button')[this.tabs.indexOf(next)] as HTMLElement).focus();
  }
}
