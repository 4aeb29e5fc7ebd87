/**
 * Residual index (0..L) and decoder layer (0..L-1) are distinct types: the run-time constructors check ranges, and
 * test/types/layer-index.types.ts, compiled here with the TypeScript compiler, shows that passing one for the other
 * does not type-check (every @ts-expect-error there is an error; without them the file has exactly that many).
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { decoderLayer, decoderLayers, layerBefore, outputOf, residualIndex } from '../../src/core/model/layer-index.js';

const FILE = join(process.cwd(), 'test/types/layer-index.types.ts');

/** Diagnostics per file, from one program (compiling the project's imports once). */
function diagnostics(files: string[]): Map<string, readonly ts.Diagnostic[]> {
  const options: ts.CompilerOptions = {
    target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext, moduleResolution: ts.ModuleResolutionKind.Bundler, strict: true,
    noEmit: true, skipLibCheck: true, types: ['node'], lib: ['lib.es2022.d.ts', 'lib.dom.d.ts'],
  };
  const program = ts.createProgram(files, options);
  return new Map(files.map((f) => [f, ts.getPreEmitDiagnostics(program, program.getSourceFile(f))]));
}

describe('residual index and decoder layer', () => {
  it('constructors check ranges and convert one apart', () => {
    expect(residualIndex(0, 4)).toBe(0);
    expect(residualIndex(4, 4)).toBe(4);
    expect(() => residualIndex(5, 4)).toThrow(/expected 0\.\.4/);
    expect(decoderLayer(3, 4)).toBe(3);
    expect(() => decoderLayer(4, 4)).toThrow(/expected 0\.\.3/);
    expect(() => decoderLayer(1.5)).toThrow(/non-negative integer/);
    expect(decoderLayers([0, 2], 4)).toEqual([0, 2]);
    expect(outputOf(decoderLayer(2))).toBe(3);
    expect(layerBefore(residualIndex(3), 4)).toBe(2);
    expect(() => layerBefore(residualIndex(0), 4)).toThrow(/embedding output/);
  });

  it('passing one kind for the other does not type-check', () => {
    const text = readFileSync(FILE, 'utf8');
    const expected = text.split('\n').filter((l) => l.trim().startsWith('// @ts-expect-error')).length;
    expect(expected).toBe(5);
    const stripped = join(process.cwd(), 'test/types/.layer-index.stripped.ts');
    writeFileSync(stripped, text.replace(/^\s*\/\/ @ts-expect-error.*$/gm, ''));
    try {
      const all = diagnostics([FILE, stripped]);
      expect(all.get(FILE)!.map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'))).toEqual([]);
      const errors = all.get(stripped)!;
      expect(errors).toHaveLength(expected);
      for (const e of errors) expect(ts.flattenDiagnosticMessageText(e.messageText, '\n')).toMatch(/ResidualIndex|DecoderLayer/);
    } finally {
      rmSync(stripped, { force: true });
    }
    // a TypeScript program over the project's types: ~5 s alone, 74 s on a 2-core machine at load 27
  }, 300_000);
});
