/** SHA-256 through WebCrypto (crypto.subtle: Node 20 and every browser), so hashing code runs on both. */

function subtle(): SubtleCrypto {
  const c = (globalThis as { crypto?: Crypto }).crypto;
  if (!c?.subtle) throw new Error('WebCrypto (crypto.subtle) is not available here: SHA-256 cannot be computed');
  return c.subtle;
}

/** SHA-256 (lower-case hex) of byte chunks taken as one sequence. */
export async function sha256Hex(...chunks: Uint8Array[]): Promise<string> {
  let data: Uint8Array;
  if (chunks.length === 1) data = chunks[0]!;
  else {
    data = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
    let off = 0;
    for (const c of chunks) {
      data.set(c, off);
      off += c.byteLength;
    }
  }
  const digest = await subtle().digest('SHA-256', data as unknown as BufferSource);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

/** SHA-256 of a text's UTF-8 bytes. */
export function sha256Text(text: string): Promise<string> {
  return sha256Hex(new TextEncoder().encode(text));
}
