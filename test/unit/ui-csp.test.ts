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
