/**
 * Science Gateway's JupyterLab side panel (a JupyterLab 4 extension, shipped prebuilt in the
 * `science-gateway` wheel): find and stage data, watch requests, run Dask clusters, over the
 * gateway's REST API in the user's own server.
 */
import { ILabShell, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { IFrame, MainAreaWidget } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';
import { LabIcon } from '@jupyterlab/ui-components';

import { GatewayAPI } from './api';
import { GatewayPanel, IPanelHost } from './panel';
import { dashboardPath, pathsCode } from './state';
import { walltimePlugin } from './walltime';

const ICON_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16"><g class="jp-icon3" fill="#616161">' +
  '<path d="M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm0 2a8 8 0 0 1 7.7 6H15a3 3 0 0 0-6 0H4.3A8 8 0 0 1 12 4zm0 16a8 8 0 0 1-7.7-8H9a3 3 0 0 0 6 0h4.7a8 8 0 0 1-7.7 8z"/>' +
  '</g></svg>';

export const gatewayIcon = new LabIcon({ name: 'science-gateway:panel', svgstr: ICON_SVG });

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'science-gateway-panel:plugin',
  description: "Science Gateway's side panel: data, staging requests and Dask clusters",
  autoStart: true,
  requires: [ILabShell, INotebookTracker],
  activate: (app: JupyterFrontEnd, shell: ILabShell, notebooks: INotebookTracker) => {
    const api = new GatewayAPI();
    let dashboards = 0;
    const host: IPanelHost = {
      api,
      async insertPaths(did: string): Promise<boolean> {
        const current = notebooks.currentWidget;
        if (!current) {
          return false;
        }
        const notebook = current.content;
        const active = notebook.activeCell;
        // an empty code cell takes the code; otherwise a new cell below the active one
        if (!active || active.model.type !== 'code' || active.model.sharedModel.getSource().trim()) {
          NotebookActions.insertBelow(notebook);
        }
        notebook.activeCell?.model.sharedModel.setSource(pathsCode(did));
        shell.activateById(current.id);
        return true;
      },
      openDashboard(link: string, title: string): void {
        const path = dashboardPath(link, window.location.origin);
        if (path === null) {
          window.open(link, '_blank', 'noopener');
          return;
        }
        const frame = new IFrame({ sandbox: ['allow-scripts', 'allow-same-origin', 'allow-popups'] });
        frame.url = URLExt.normalize(path);
        const widget = new MainAreaWidget({ content: frame });
        widget.id = `science-gateway-dask-dashboard-${++dashboards}`;
        widget.title.label = title;
        widget.title.closable = true;
        shell.add(widget, 'main');
        shell.activateById(widget.id);
      }
    };
    const panel = new GatewayPanel(host);
    panel.title.icon = gatewayIcon;
    shell.add(panel, 'left', { rank: 300 });
    app.commands.addCommand('science-gateway:open-panel', {
      label: 'Science Gateway: open the side panel',
      execute: () => shell.activateById(panel.id)
    });
    (window as any).scienceGatewayPanel = panel; // for people debugging in the console, and the browser tests
  }
};

export default [plugin, walltimePlugin];
