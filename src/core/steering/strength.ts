/**
 * The largest patch strength any entry point accepts: alpha, the manual scale, the ActAdd coefficient, layer weights,
 * |x| <= 10,000. The paper uses 2 and the shipped organism 14; far beyond that the patch swamps the residual stream
 * (and overflows float16), and the reply is noise or empty. One number, so the CLI and the lab refuse the same values.
 */
export const STRENGTH_LIMIT = 10_000;
