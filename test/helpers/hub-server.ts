/**
 * A local HTTP server laid out like the Hugging Face hub, for tests that load "hub ids" without the network:
 *   GET|HEAD /{org}/{model}/resolve/{revision}/{file path}  -> the file from the folder registered for org/model
 *   anything else / a missing file                         -> 404 (body "Entry not found", like the hub)
 * Range requests (bytes=a-b) get 206 as transformers.js's metadata probe expects. `cut` makes the server announce
 * the full Content-Length, send only part of the body and drop the connection (for hardening tests).
 * Every request is recorded in `requests` ("METHOD path").
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { AddressInfo } from 'node:net';

export interface CutRule {
  /** Which files to cut: a suffix of the file path (e.g. 'onnx/model.onnx') or a RegExp on it. */
  file: string | RegExp;
  /** Fraction of the body sent before the connection is dropped (default 0.5). */
  fraction?: number;
  /** How many responses to cut (default: all). */
  times?: number;
}

export interface HubServer {
  /** Base URL ending in '/', suitable for transformers.js env.remoteHost. */
  url: string;
  requests: string[];
  /** Serve `dir` as repo `repo` ('org/model'). */
  addRepo(repo: string, dir: string): void;
  setCut(rule: CutRule | null): void;
  close(): Promise<void>;
}

const ROUTE = /^\/([\w.-]+\/[\w.-]+|[\w.-]+)\/resolve\/([^/]+)\/(.+)$/;

function matches(rule: CutRule, file: string): boolean {
  return typeof rule.file === 'string' ? file.endsWith(rule.file) : rule.file.test(file);
}

export async function startHubServer(repos: Record<string, string> = {}): Promise<HubServer> {
  const folders = new Map(Object.entries(repos));
  const requests: string[] = [];
  let cut: (CutRule & { left: number }) | null = null;

  const notFound = (res: ServerResponse) => {
    res.writeHead(404, { 'content-type': 'text/plain', 'x-error-code': 'EntryNotFound' });
    res.end('Entry not found');
  };

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    requests.push(`${req.method} ${url.pathname}`);
    const m = ROUTE.exec(decodeURIComponent(url.pathname));
    if (!m || (req.method !== 'GET' && req.method !== 'HEAD')) return notFound(res);
    const [, repo, , file] = m as unknown as [string, string, string, string];
    const root = folders.get(repo);
    if (!root) return notFound(res);
    const full = path.resolve(root, file);
    if (!full.startsWith(path.resolve(root) + path.sep)) return notFound(res);
    let data: Buffer;
    try {
      const st = await fs.stat(full);
      if (!st.isFile()) return notFound(res);
      data = await fs.readFile(full);
    } catch {
      return notFound(res);
    }
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers['range'] ?? '');
    if (range) {
      const start = Number(range[1]);
      const end = range[2] ? Math.min(Number(range[2]), data.length - 1) : data.length - 1;
      res.writeHead(206, { 'content-length': String(end - start + 1), 'content-range': `bytes ${start}-${end}/${data.length}`, 'accept-ranges': 'bytes' });
      res.end(req.method === 'HEAD' ? undefined : data.subarray(start, end + 1));
      return;
    }
    res.writeHead(200, { 'content-length': String(data.length), 'content-type': 'application/octet-stream', 'accept-ranges': 'bytes' });
    if (req.method === 'HEAD') return void res.end();
    if (cut && cut.left !== 0 && matches(cut, file)) {
      cut.left--;
      const n = Math.floor(data.length * (cut.fraction ?? 0.5));
      res.write(data.subarray(0, n), () => {
        // Let the partial body reach the client, then drop the connection mid-response.
        setTimeout(() => res.socket?.destroy(), 20);
      });
      return;
    }
    res.end(data);
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((e) => {
      res.writeHead(500);
      res.end(String(e));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/`,
    requests,
    addRepo: (repo, dir) => void folders.set(repo, dir),
    setCut: (rule) => {
      cut = rule ? { ...rule, left: rule.times ?? -1 } : null;
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((e) => (e ? reject(e) : resolve()));
      }),
  };
}
