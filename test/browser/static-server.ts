/**
 * A plain static file server, as a static host (a project page, a bucket, nginx with defaults) would be: files of
 * one folder under a URL prefix, a content type by extension, single byte ranges (what reading the head of a model
 * file for its identity asks for), an index.html for a folder, 404 for everything else,
 * and none of the headers the dev and preview servers add (no cross-origin isolation, no CSP header; the built
 * index.html carries its own CSP meta tag). Every 404 is recorded for the test to report.
 */
import { createReadStream, existsSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, join, normalize, resolve, sep } from 'node:path';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css',
  '.wasm': 'application/wasm', '.json': 'application/json', '.jsonl': 'application/jsonl', '.csv': 'text/csv',
  '.txt': 'text/plain', '.md': 'text/markdown', '.onnx': 'application/octet-stream', '.safetensors': 'application/octet-stream',
};

export interface StaticServer { url: string; notFound: string[]; close(): Promise<void> }

/** Serves `dir` under `prefix` (starting and ending with '/') on 127.0.0.1 at a free port. */
export async function serveStatic(dir: string, prefix: string): Promise<StaticServer> {
  if (!prefix.startsWith('/') || !prefix.endsWith('/')) throw new Error(`prefix must start and end with '/', got ${prefix}`);
  const root = resolve(dir);
  const notFound: string[] = [];
  const server = createServer((req, res) => {
    const path = decodeURIComponent((req.url ?? '/').split('?')[0]!);
    let file = path.startsWith(prefix) ? normalize(join(root, path.slice(prefix.length))) : '';
    if (file && (file === root || file.startsWith(root + sep)) && existsSync(file) && statSync(file).isDirectory()) file = join(file, 'index.html');
    if (!file || !(file === root || file.startsWith(root + sep)) || !existsSync(file) || !statSync(file).isFile()) {
      notFound.push(path);
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end(`not found: ${path}`);
      return;
    }
    const size = statSync(file).size;
    const type = TYPES[extname(file)] ?? 'application/octet-stream';
    // One byte range (`bytes=a-b`, `bytes=a-`, `bytes=-n`), as static hosts answer it; other forms get the whole file.
    const range = /^bytes=(\d*)-(\d*)$/.exec(req.headers.range ?? '');
    if (range && (range[1] !== '' || range[2] !== '')) {
      const start = range[1] === '' ? Math.max(0, size - Number(range[2])) : Number(range[1]);
      const end = range[1] === '' || range[2] === '' ? size - 1 : Math.min(Number(range[2]), size - 1);
      if (start > end || start >= size) {
        res.writeHead(416, { 'Content-Range': `bytes */${size}` }).end();
        return;
      }
      res.writeHead(206, { 'Content-Type': type, 'Content-Length': end - start + 1, 'Content-Range': `bytes ${start}-${end}/${size}`, 'Accept-Ranges': 'bytes' });
      if (req.method === 'HEAD') res.end();
      else createReadStream(file, { start, end }).pipe(res);
      return;
    }
    res.writeHead(200, { 'Content-Type': type, 'Content-Length': size, 'Accept-Ranges': 'bytes' });
    if (req.method === 'HEAD') res.end();
    else createReadStream(file).pipe(res);
  });
  await new Promise<void>((ok, fail) => server.once('error', fail).listen(0, '127.0.0.1', () => ok()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    notFound,
    close: () => new Promise<void>((ok) => {
      server.closeAllConnections();
      server.close(() => ok());
    }),
  };
}
