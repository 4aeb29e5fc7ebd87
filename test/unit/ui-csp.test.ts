/** The lab's Content-Security-Policy (src/ui/csp.ts). */
import { describe, expect, test } from 'vitest';
import { contentSecurityPolicy } from '../../src/ui/csp.js';

function directives(csp: string): Map<string, string[]> {
  return new Map(csp.split(';').map((d) => d.trim().split(/\s+/)).map(([k, ...v]) => [k!, v]));
}

describe('content security policy', () => {
  test('WASM may compile, JavaScript may not be evaluated, workers from self or blob', () => {
    const d = directives(contentSecurityPolicy());
    expect(d.get('script-src')).toContain("'wasm-unsafe-eval'");
    expect(d.get('script-src')).not.toContain("'unsafe-eval'");
    expect(d.get('script-src')).not.toContain("'unsafe-inline'");
    expect(d.get('worker-src')).toEqual(["'self'", 'blob:']);
    expect(d.get('object-src')).toEqual(["'none'"]);
  });

  test('nothing remote except the hub, in every directive', () => {
    const csp = contentSecurityPolicy();
    const remote = csp.match(/https?:\/\/[^\s;]+/g) ?? [];
    expect(remote.length).toBeGreaterThan(0);
    for (const r of remote) expect(r).toMatch(/^https:\/\/(\*\.)?(huggingface\.co|hf\.co)$/);
    expect(directives(csp).get('default-src')).toEqual(["'self'"]);
  });

  test('dev adds only the local hot-reload socket; meta leaves out frame-ancestors', () => {
    const dev = directives(contentSecurityPolicy({ dev: true })).get('connect-src')!;
    expect(dev.filter((x) => x.startsWith('ws:'))).toEqual(['ws://127.0.0.1:*', 'ws://localhost:*']);
    expect(contentSecurityPolicy({ meta: true })).not.toMatch(/frame-ancestors/);
    expect(contentSecurityPolicy()).toMatch(/frame-ancestors 'none'/);
  });
});

describe('text-only rendering', () => {
  test('no component renders raw HTML ({@html}) or sets innerHTML: prompts and outputs are untrusted', async () => {
    const { readdirSync, readFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const walk = (dir: string): string[] =>
      readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]));
    const files = walk(join(import.meta.dirname, '../../src/ui')).filter((f) => /\.(svelte|ts)$/.test(f));
    expect(files.length).toBeGreaterThan(10);
    const offenders = files.filter((f) => /\{@html|\.innerHTML\s*=|outerHTML\s*=|insertAdjacentHTML/.test(readFileSync(f, 'utf8')));
    expect(offenders).toEqual([]);
  });
});
