/** The panel's state logic (src/state.ts): wording, change detection, the poll schedule. */
import {
  ICluster,
  IPresets,
  IStageRequest,
  PollSchedule,
  availabilityText,
  clusterSettling,
  clustersSnapshot,
  dashboardPath,
  errorText,
  humanBytes,
  metadataText,
  noPresetsText,
  pathsCode,
  presetLimit,
  presetOptions,
  requestView,
  requestsSnapshot,
  searchQuery,
  workersText
} from '../src/state';

function request(overrides: Partial<IStageRequest> = {}): IStageRequest {
  return {
    id: 'r1',
    did: 'demo:run2024.raw.0001',
    state: 'in_progress',
    files_total: 4,
    files_done: 1,
    files_in_flight: 3,
    files_failed: 0,
    bytes_total: 12_000_000,
    tape_recall: false,
    message: '',
    failed: [],
    paths: ['/data/a.fits'],
    ...overrides
  };
}

describe('wording', () => {
  test.each([
    [null, '?'],
    [0, '0 B'],
    [999, '999 B'],
    [1000, '1.0 kB'],
    [12_345_678, '12.3 MB'],
    [4e15, '4000.0 TB']
  ])('humanBytes(%p) is %p', (n, text) => {
    expect(humanBytes(n as number | null)).toBe(text);
  });

  test('availability and metadata read as in the widgets', () => {
    const base = { did: 'a:b', scope: 'a', name: 'b', bytes: 1, files: 1, metadata: {} };
    expect(availabilityText({ ...base, availability: 'tape' })).toBe('on tape');
    expect(availabilityText({ ...base, availability: 'disk' })).toBe('available now');
    expect(availabilityText({ ...base, availability: 'unknown' })).toBe('unknown');
    expect(metadataText({ project: 'run2024', datatype: 'RAW' })).toBe('datatype=RAW, project=run2024');
  });

  test("errors show the API's message, capitalised, or say what happened", () => {
    expect(errorText(400, { message: "no '..' in a name" })).toBe("No '..' in a name");
    expect(errorText(502, '<html>bad gateway</html>')).toBe('The gateway answered HTTP 502.');
    expect(errorText(0, null)).toBe('The server did not answer: is it still running?');
  });
});

describe('requestView', () => {
  test('copying, with files and size', () => {
    const view = requestView(request());
    expect(view.words).toBe('copying (1 of 4 files), 12.0 MB');
    expect([view.done, view.total, view.style, view.canCancel]).toEqual([1, 4, 'info', true]);
  });

  test('recalling from tape', () => {
    expect(requestView(request({ tape_recall: true, bytes_total: null })).words).toBe(
      'recalling from tape (1 of 4 files)'
    );
  });

  test('ready: no count, no cancel', () => {
    const view = requestView(request({ state: 'ready', files_done: 4, files_in_flight: 0 }));
    expect([view.words, view.style, view.canCancel]).toEqual(['ready, 12.0 MB', 'success', false]);
  });

  test('a failed file with nothing in flight is stuck, with the reason', () => {
    const view = requestView(
      request({ files_in_flight: 0, files_failed: 1, failed: [{ did: 'demo:f3', reason: 'checksum mismatch' }] })
    );
    expect(view.words.startsWith('stuck: checksum mismatch')).toBe(true);
    expect(view.failed).toEqual(['demo:f3: checksum mismatch']);
    expect(view.style).toBe('danger');
  });

  test('a failed request without file reasons says its message', () => {
    expect(requestView(request({ state: 'failed', message: 'rule expired' })).words).toMatch(/^stuck: rule expired/);
  });

  test('an empty request still has a bar of one', () => {
    expect(requestView(request({ files_total: 0, files_done: 0 })).total).toBe(1);
  });
});

describe('change detection', () => {
  test('the same requests compare equal, progress does not', () => {
    const a = requestsSnapshot([request()]);
    expect(requestsSnapshot([request()])).toBe(a);
    expect(requestsSnapshot([request({ files_done: 2 })])).not.toBe(a);
    expect(requestsSnapshot([request()], 'the catalogue is down')).not.toBe(a);
    expect(requestsSnapshot([request({ notice: 'last status from 12:00' })])).not.toBe(a);
  });

  test('clusters: workers arriving is a change; settling until they are all there', () => {
    const c: ICluster = {
      id: '1-abcdef', preset: 'small', status: 'running', workers: 1, requested: 2,
      workers_per_job: 1, max_workers: 4, dashboard_link: ''
    };
    expect(clustersSnapshot([c])).not.toBe(clustersSnapshot([{ ...c, workers: 2 }]));
    expect(clusterSettling(c)).toBe(true);
    expect(clusterSettling({ ...c, workers: 2 })).toBe(false);
    expect(clusterSettling({ ...c, workers: 2, status: 'closing' })).toBe(true);
  });
});

describe('PollSchedule', () => {
  test('fast after an action, steady while things change, backing off while nothing does', () => {
    const s = new PollSchedule(2000, 15000, 60000);
    expect(s.nextWait(true)).toBe(2000);
    expect(s.polled('a')).toBe(15000);
    expect(s.polled('b')).toBe(15000);
    expect([s.polled('b'), s.polled('b'), s.polled('b')]).toEqual([30000, 60000, 60000]);
    expect(s.polled('c')).toBe(15000);
  });

  test('nothing in progress: the slowest interval at once', () => {
    const s = new PollSchedule(2000, 15000, 60000);
    expect(s.polled('done', false)).toBe(60000);
  });

  test('an action here resets the delay; a hidden panel never polls', () => {
    const s = new PollSchedule(2000, 15000, 60000);
    s.polled('a');
    s.polled('a');
    s.changed();
    expect(s.nextWait(true)).toBe(2000);
    expect(s.nextWait(false)).toBeNull();
  });

  test.each([
    ['every answer different (20 requests progressing)', (i: number) => `progress ${i}`, 5],
    ['nothing moving', () => 'twenty requests, nothing moving', 3]
  ])('a minute of watching, %s: at most %i calls', (_, snapshot, most) => {
    // the benchmark's figure in miniature (the peer asks 20 datasets every 10 s: 120 a minute)
    const s = new PollSchedule(2000, 15000, 60000);
    let t = s.nextWait(true) as number;
    let calls = 0;
    while (t < 60000) {
      calls += 1;
      t += s.polled((snapshot as (i: number) => string)(calls));
    }
    expect(calls).toBeLessThanOrEqual(most as number);
    expect(calls * 25).toBeLessThanOrEqual(120);
  });
});

describe('presets', () => {
  const described: IPresets = {
    backend: 'slurm',
    max_workers: 6,
    account: 'astro',
    presets: {
      large: { description: '', partition: 'cpu', cores: 4, memory_gb: 16, workers_per_job: 1, walltime_minutes: 60, max_workers: 4 },
      small: { description: 'up to 8 small workers', partition: 'cpu', cores: 1, memory_gb: 2, workers_per_job: 1, walltime_minutes: 60, max_workers: 8 }
    }
  };

  test('smallest first, with the description or the size', () => {
    expect(presetOptions(described)).toEqual([
      ['small: up to 8 small workers', 'small'],
      ['large: 4 cores, 16 GB per worker', 'large']
    ]);
  });

  test("the limit is the preset's or the user's, whichever is lower", () => {
    expect(presetLimit(described, 'small')).toBe(6);
    expect(presetLimit(described, 'large')).toBe(4);
  });

  test('no presets says why', () => {
    expect(noPresetsText({ ...described, presets: {} })).toMatch(/none of your groups/);
    expect(noPresetsText(described)).toBe('');
  });

  test('worker counts', () => {
    expect(workersText(0, 0)).toBe('No workers: scale up to start some.');
    expect(workersText(1, 2)).toBe('1 of 2 workers connected.');
    expect(workersText(1, 1)).toBe('1 of 1 worker connected.');
  });
});

describe('what goes out', () => {
  test('the inserted code stages, waits and gives the paths, for that dataset only', () => {
    const code = pathsCode('demo:run2024.raw.0001');
    expect(code).toContain('from science_gateway import catalog');
    expect(code).toContain('paths = catalog.paths(catalog.wait(catalog.stage("demo:run2024.raw.0001")))');
  });

  test('a hostile name cannot break out of the string or the comment', () => {
    expect(pathsCode('x:a\nimport os').split('\n')).toHaveLength(5);
    const code = pathsCode('x:a"); import os; os.system("rm -rf ~');
    expect(code.split('\n')[3]).toBe(
      'paths = catalog.paths(catalog.wait(catalog.stage("x:a\\"); import os; os.system(\\"rm -rf ~")))'
    );
  });

  test('the search query: partial pages, filters only when given, the page token', () => {
    expect(searchQuery('  ', '', null)).toBe('pattern=*&limit=50&partial=true');
    expect(searchQuery('run2024*', 'project=run2024, datatype=RAW', 'p2')).toBe(
      'pattern=run2024*&filters=project%3Drun2024%2C+datatype%3DRAW&limit=50&partial=true&page=p2'
    );
  });

  test('a dashboard of this server opens in a tab; another origin does not', () => {
    const origin = 'https://gateway.example.org';
    expect(dashboardPath('/user/demo/proxy/8787/status', origin)).toBe('/user/demo/proxy/8787/status');
    expect(dashboardPath('https://evil.example.com/status', origin)).toBeNull();
    expect(dashboardPath('', origin)).toBeNull();
  });
});
