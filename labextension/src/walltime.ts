/**
 * The walltime warning: a server that runs as a batch job stops when the job's walltime is up.
 * This plugin asks the gateway's `GET session` (docs/operations.md) at start and once a minute
 * while the job ends; once the answer carries a warning it shows it as a JupyterLab notification
 * with the time left, updated each minute (not closed by itself). A server that is not a batch job
 * (`ends: false`) is asked once.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';

import { GatewayAPI } from './api';

/** What `GET /gateway/api/session` answers. */
export interface ISession {
  scheduler: string | null;
  job_id: string | null;
  ends: boolean;
  end_time: number | null;
  seconds_left: number | null;
  warning: string;
}

/** Milliseconds between two questions. */
export const SESSION_POLL_MS = 60_000;

/** Shows, updates and keeps one notification for the warning; returns its id. */
export function showWarning(session: ISession, id: string | null): string | null {
  if (!session.warning) {
    return id;
  }
  if (id !== null && Notification.update({ id, message: session.warning, type: 'warning', autoClose: false })) {
    return id;
  }
  return Notification.warning(session.warning, { autoClose: false });
}

export const walltimePlugin: JupyterFrontEndPlugin<void> = {
  id: 'science-gateway-panel:walltime',
  description: "Warns before the server's batch job reaches its walltime",
  autoStart: true,
  activate: (app: JupyterFrontEnd) => {
    const api = new GatewayAPI();
    let id: string | null = null;
    const ask = async () => {
      let session: ISession;
      try {
        session = await api.request<ISession>('session');
      } catch {
        window.setTimeout(ask, SESSION_POLL_MS); // the server may be busy: ask again later
        return;
      }
      id = showWarning(session, id);
      if (session.ends && (session.seconds_left ?? 0) > 0) {
        window.setTimeout(ask, SESSION_POLL_MS);
      }
    };
    void app.restored.then(ask);
  }
};
