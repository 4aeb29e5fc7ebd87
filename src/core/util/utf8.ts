/**
 * Strict UTF-8 for the text files users give (datasets, settings): bytes that are not UTF-8 are refused with the
 * file, the byte offset and the line, instead of silently becoming U+FFFD (issue: a Latin-1 prompt file was read as
 * replacement characters without a word). Browser-safe.
 */

export class Utf8Error extends Error {
  readonly code = 'NOT_UTF8';
  constructor(message: string, readonly offset: number) {
    super(message);
    this.name = 'Utf8Error';
  }
}

/** Offset of the first byte that does not belong to well-formed UTF-8 (RFC 3629), or -1. */
export function firstInvalidUtf8(b: Uint8Array): number {
  let i = 0;
  const n = b.length;
  while (i < n) {
    const c = b[i]!;
    if (c < 0x80) {
      i++;
      continue;
    }
    let need: number;
    let lo = 0x80;
    let hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) need = 1;
    else if (c >= 0xe0 && c <= 0xef) {
      need = 2;
      if (c === 0xe0) lo = 0xa0; // no overlong forms
      if (c === 0xed) hi = 0x9f; // no surrogates
    } else if (c >= 0xf0 && c <= 0xf4) {
      need = 3;
      if (c === 0xf0) lo = 0x90;
      if (c === 0xf4) hi = 0x8f; // nothing above U+10FFFF
    } else return i;
    for (let k = 1; k <= need; k++) {
      const d = b[i + k];
      if (d === undefined || d < (k === 1 ? lo : 0x80) || d > (k === 1 ? hi : 0xbf)) return i;
    }
    i += need + 1;
  }
  return -1;
}

const decoder = new TextDecoder('utf-8', { fatal: true });

/** The text of `bytes` (a leading byte-order mark dropped); throws Utf8Error naming `source` when not UTF-8. */
export function decodeUtf8(bytes: Uint8Array, source: string): string {
  const bad = firstInvalidUtf8(bytes);
  if (bad >= 0) {
    let line = 1;
    for (let i = 0; i < bad; i++) if (bytes[i] === 0x0a) line++;
    const hex = `0x${bytes[bad]!.toString(16).padStart(2, '0')}`;
    throw new Utf8Error(`${source} is not UTF-8 text: byte ${hex} at offset ${bad} (line ${line}) does not form a UTF-8 character; save the file as UTF-8 and try again`, bad);
  }
  return decoder.decode(bytes);
}
