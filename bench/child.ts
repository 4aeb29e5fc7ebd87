/**
 * Each measurement runs in its own Node process (tsx): clean RSS figures, no ORT sessions or tfjs backends left over
 * from another section, and a crash in one section is reported instead of ending the run. A child receives its
 * arguments as JSON in argv[2] and writes its result as JSON to the file named in argv[3].
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const TSX = fileURLToPath(new URL('../node_modules/.bin/tsx', import.meta.url));

export async function runChild<T>(script: string, args: unknown, opts: { timeoutMs: number; log?: (s: string) => void }): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'steerlab-bench-'));
  const out = join(dir, 'result.json');
  const path = fileURLToPath(new URL(script, import.meta.url));
  try {
    const code = await new Promise<number | null>((resolve, reject) => {
      // tsx runs the script in a node process of its own: the child gets its own process group (detached) so a
      // timeout kills the script too, not only the tsx wrapper (which would leave the script running and the pipes open).
      const p = spawn(TSX, [path, JSON.stringify(args), out], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      const killGroup = () => {
        try {
          if (p.pid !== undefined) process.kill(-p.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      };
      // the bench itself ending (Ctrl-C, kill, a crash) takes its running child with it: outside the terminal's
      // process group, the child would not get the Ctrl-C itself
      const onSignal = (sig: NodeJS.Signals) => {
        killGroup();
        process.exit(sig === 'SIGINT' ? 130 : 143);
      };
      process.once('exit', killGroup);
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      const timer = setTimeout(killGroup, opts.timeoutMs);
      const relay = (b: Buffer) => {
        for (const line of b.toString().split('\n')) if (line.trim()) opts.log?.(`    ${line}`);
      };
      p.stdout.on('data', relay);
      p.stderr.on('data', relay);
      p.on('error', reject);
      p.on('close', (c, sig) => {
        clearTimeout(timer);
        process.removeListener('exit', killGroup);
        process.removeListener('SIGINT', onSignal);
        process.removeListener('SIGTERM', onSignal);
        resolve(sig ? -1 : c);
      });
    });
    let text: string;
    try {
      text = readFileSync(out, 'utf8');
    } catch {
      throw new Error(`${script} ${JSON.stringify(args)} wrote no result (exit ${code === -1 ? `killed after ${opts.timeoutMs} ms` : code})`);
    }
    return JSON.parse(text) as T;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Inside a child: its arguments, and how to hand back the result. */
export function childArgs<A>(): { args: A; done(result: unknown): void } {
  const args = JSON.parse(process.argv[2] ?? '{}') as A;
  const file = process.argv[3];
  if (!file) throw new Error('bench child: expected a result file path as the second argument');
  return { args, done: (result) => writeFileSync(file, JSON.stringify(result)) };
}

/**
 * Writes a graph variant as bench_{name}.onnx next to `original`, so that external data (location
 * 'model.onnx_data') resolves the same; returns its path.
 */
export function writeGraphVariant(original: string, name: string, bytes: Uint8Array): string {
  const file = join(dirname(original), `bench_${name}.onnx`);
  writeFileSync(`${file}.tmp`, bytes);
  renameSync(`${file}.tmp`, file);
  return file;
}
