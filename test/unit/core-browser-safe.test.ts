/**
 * The core the browser needs never imports Node: src/core/index.ts (the public, browser-safe API) is bundled with
 * esbuild for platform 'browser', and every import of a Node built-in (node:fs, fs, path, crypto, ...) reachable from
 * it is a failure naming the importing file. Third-party packages are left out of the bundle (their browser builds
 * are chosen by the app's bundler); Node-only code lives in *-node.ts / node-*.ts files that index.ts never reaches,
 * or behind a dynamic import whose specifier is a variable, taken only when running in Node (model/base-cache.ts
 * loadNodeIo, controller/backend.ts), which esbuild, like Vite, does not follow.
 */
import { builtinModules } from 'node:module';
import { build, type Plugin } from 'esbuild';
import { describe, expect, it } from 'vitest';

const BUILTINS = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));

async function nodeImports(entry: string): Promise<{ imports: string[]; files: string[] }> {
  const imports: string[] = [];
  const files = new Set<string>();
  const watch: Plugin = {
    name: 'node-imports',
    setup(b) {
      b.onResolve({ filter: /.*/ }, (args) => {
        if (args.importer) files.add(args.importer.replace(`${process.cwd()}/`, ''));
        if (BUILTINS.has(args.path) || args.path.startsWith('node:')) {
          imports.push(`${args.importer.replace(`${process.cwd()}/`, '')} imports ${args.path}`);
          return { path: args.path, external: true };
        }
        return undefined;
      });
    },
  };
  await build({ entryPoints: [entry], bundle: true, platform: 'browser', format: 'esm', packages: 'external', write: false, logLevel: 'silent', plugins: [watch] });
  return { imports, files: [...files].sort() };
}

describe('browser-safe core', () => {
  it('src/core/index.ts reaches no Node built-in', async () => {
    const { imports, files } = await nodeImports('src/core/index.ts');
    expect(imports).toEqual([]);
    // It really walked the core: the model loader, the method, the runner, the identity code.
    for (const f of ['src/core/model/load.ts', 'src/core/method/flow.ts', 'src/core/eval/runner.ts', 'src/core/model/model-content-id.ts', 'src/core/method/artifacts.ts']) {
      expect(files, `${f} should be reached from index.ts`).toContain(f);
    }
    expect(files.filter((f) => /-node\.ts$|\/node-[^/]*\.ts$/.test(f))).toEqual([]);
  });

  it('the check finds a Node import when there is one (index-node.ts reaches node:fs)', async () => {
    const { imports } = await nodeImports('src/core/index-node.ts');
    expect(imports.some((i) => /artifacts-node\.ts imports node:fs\/promises/.test(i))).toBe(true);
  });
});
