/**
 * The gateway's REST API (`{base_url}/gateway/api/`) from JupyterLab: the same routes the widgets
 * and the Python API call, authenticated as JupyterLab's own requests are (ServerConnection).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { errorText } from './state';

/** The gateway said no (or did not answer); `message` is the API's own, for people. */
export class GatewayError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
  }
}

export class GatewayAPI {
  /** How many calls this page made (the benchmark and the tests read it). */
  calls = 0;

  constructor(private settings: ServerConnection.ISettings = ServerConnection.makeSettings()) {}

  async request<T>(path: string, init: RequestInit = {}): Promise<T> {
    const url = URLExt.join(this.settings.baseUrl, 'gateway/api', path);
    this.calls += 1;
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(url, init, this.settings);
    } catch (e) {
      throw new GatewayError(0, errorText(0, null));
    }
    const text = await response.text();
    let body: unknown = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    if (!response.ok) {
      throw new GatewayError(response.status, errorText(response.status, body));
    }
    return body as T;
  }

  get<T>(path: string): Promise<T> {
    return this.request<T>(path);
  }

  send<T>(method: string, path: string, body?: unknown): Promise<T> {
    return this.request<T>(path, {
      method,
      body: body === undefined ? undefined : JSON.stringify(body),
      headers: body === undefined ? undefined : { 'Content-Type': 'application/json' }
    });
  }
}
